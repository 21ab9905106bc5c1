import Foundation
import MoireCore

/// Builds the OME-XML (2016-06 schema) for a recording's acquired planes.
enum OMEXML {
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func num(_ v: Double) -> String { String(format: "%.6g", v) }

    /// Seconds from nanoseconds at full (nanosecond) precision: `%.6g` would keep 1 ms after 100 s.
    static func seconds(_ ns: Int64) -> String {
        let sign = ns < 0 ? "-" : ""
        let magnitude = ns.magnitude
        let fraction = String(magnitude % 1_000_000_000)
        return "\(sign)\(magnitude / 1_000_000_000).\(String(repeating: "0", count: 9 - fraction.count))\(fraction)"
    }

    /// xsd:dateTime in UTC with milliseconds, as OME's AcquisitionDate takes it.
    static func acquisitionDate(_ ns: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(ns) / 1e9))
    }

    /// OME's AcquisitionMode for a run's mode (Bio-Formats and OMERO show it).
    /// Derived recordings (`sim2d-sr`, `llsm-volume`, …) keep the mode of the run they come from.
    static func acquisitionMode(_ mode: String) -> String {
        if mode.hasPrefix("sim") { return "StructuredIllumination" }
        if mode.hasPrefix("lls") { return "SPIM" }
        return "WideField"
    }

    /// OME's IlluminationType: fluorescence from the objective side, or a light sheet at an angle.
    static func illumination(_ mode: String) -> String {
        mode.hasPrefix("lls") ? "Other" : "Epifluorescence"
    }

    /// The Instrument's lasers and detector (they come before its objective in the schema).
    static func instrumentParts(_ instrument: RecordingInstrument?) -> String {
        guard let instrument else { return "" }
        var x = ""
        for (i, laser) in instrument.lasers.enumerated() {
            x += "<Laser ID=\"LightSource:0:\(i)\" Model=\"\(escape(laser.model))\""
            x += " Power=\"\(num(laser.maxPowerMw))\" PowerUnit=\"mW\""
            x += " Wavelength=\"\(num(laser.wavelengthNm))\" WavelengthUnit=\"nm\"/>"
        }
        if let detector = instrument.detector {
            x += "<Detector ID=\"Detector:0:0\" Model=\"\(escape(detector.model))\" Type=\"CMOS\""
            x += " Gain=\"\(num(detector.gainADUPerE))\" Offset=\"\(num(detector.offsetADU))\"/>"
        }
        return x
    }

    /// A channel's light source (its laser, attenuated to the power asked) and detector settings.
    static func channelSettings(_ instrument: RecordingInstrument?, channel c: Int) -> String {
        guard let instrument else { return "" }
        var x = ""
        if c < instrument.channelLaser.count, let index = instrument.channelLaser[c], index < instrument.lasers.count {
            let laser = instrument.lasers[index]
            let power = c < instrument.channelPowerMw.count ? instrument.channelPowerMw[c] : laser.maxPowerMw
            let attenuation = laser.maxPowerMw > 0 ? min(1, max(0, 1 - power / laser.maxPowerMw)) : 0
            x += "<LightSourceSettings ID=\"LightSource:0:\(index)\" Attenuation=\"\(num(attenuation))\""
            x += " Wavelength=\"\(num(laser.wavelengthNm))\" WavelengthUnit=\"nm\"/>"
        }
        if let detector = instrument.detector {
            let binnings = [1: "1x1", 2: "2x2", 4: "4x4", 8: "8x8"]
            x += "<DetectorSettings ID=\"Detector:0:0\" Offset=\"\(num(detector.offsetADU))\""
            x += " Gain=\"\(num(detector.gainADUPerE))\" Binning=\"\(binnings[detector.binning] ?? "Other")\"/>"
        }
        return x
    }

    /// The SIM pattern geometry per channel and orientation (period, orientation, wave vector,
    /// phase steps, modulation), as a map annotation; nil without patterns.
    static func simAnnotation(_ layout: RecordingLayout) -> String? {
        guard let patterns = layout.instrument?.patterns, patterns.contains(where: { !$0.isEmpty }) else {
            return nil
        }
        var x = "<MapAnnotation ID=\"Annotation:SIM\" Namespace=\"moire.sim/v1\"><Value>\n"
        for (c, angles) in patterns.enumerated() where c < layout.channels.count {
            for (a, angle) in angles.enumerated() {
                let phases = angle.phasesRad.map { String(format: "%.5f", $0) }.joined(separator: ",")
                let value =
                    "periodUm=\(num(angle.periodUm)) orientationDeg=\(num(angle.orientationDeg)) "
                    + "kx=\(num(angle.kx)) ky=\(num(angle.ky)) phasesRad=\(phases) modulation=\(num(angle.modulation))"
                x += "<M K=\"\(escape(layout.channels[c])).angle\(a)\">\(value)</M>\n"
            }
        }
        return x + "</Value></MapAnnotation>\n"
    }

    /// The document for `planes` written planes (a whole number of time points).
    static func document(layout: RecordingLayout, planes: [PlaneRecord], uuid: String, fileName: String) -> String {
        let timepoints = max(1, planes.count / max(1, layout.planesPerTimepoint))
        let ap = layout.angles * layout.phases
        let sizeZ = layout.zPlanes * ap
        var x = """
            <?xml version="1.0" encoding="UTF-8"?>
            <OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" \
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
            xsi:schemaLocation="http://www.openmicroscopy.org/Schemas/OME/2016-06 http://www.openmicroscopy.org/Schemas/OME/2016-06/ome.xsd" \
            UUID="urn:uuid:\(uuid)" Creator="Moiré">
            <Instrument ID="Instrument:0">\(instrumentParts(layout.instrument))<Objective ID="Objective:0:0" LensNA="\(num(layout.objectiveNA))" NominalMagnification="\(num(layout.magnification))"/></Instrument>
            <Image ID="Image:0" Name="\(escape(layout.name))">
            \(layout.startedNs.map { "<AcquisitionDate>\(acquisitionDate($0))</AcquisitionDate>" } ?? "")
            <Description>\(escape("Moiré \(layout.mode) run \(layout.run); protocol \(layout.protocolFile)"))</Description>
            <InstrumentRef ID="Instrument:0"/>
            <ObjectiveSettings ID="Objective:0:0"/>
            <Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="\(layout.pixel == .uint16 ? "uint16" : "float")" \
            SizeX="\(layout.width)" SizeY="\(layout.height)" SizeZ="\(sizeZ)" SizeC="\(layout.channels.count)" SizeT="\(timepoints)" \
            PhysicalSizeX="\(num(layout.pixelSizeUm))" PhysicalSizeXUnit="µm" PhysicalSizeY="\(num(layout.pixelSizeUm))" PhysicalSizeYUnit="µm"\
            \(layout.zPlanes > 1 && layout.zStepUm != 0 ? " PhysicalSizeZ=\"\(num(abs(layout.zStepUm)))\" PhysicalSizeZUnit=\"µm\"" : "") \
            BigEndian="false" Interleaved="false" SignificantBits="\(layout.pixel == .uint16 ? 16 : 32)">

            """
        for (c, name) in layout.channels.enumerated() {
            x += "<Channel ID=\"Channel:0:\(c)\" Name=\"\(escape(name))\" SamplesPerPixel=\"1\""
            x +=
                " AcquisitionMode=\"\(acquisitionMode(layout.mode))\" IlluminationType=\"\(illumination(layout.mode))\""
            if c < layout.excitationNm.count {
                x += " ExcitationWavelength=\"\(num(layout.excitationNm[c]))\" ExcitationWavelengthUnit=\"nm\""
            }
            if c < layout.emissionNm.count {
                x += " EmissionWavelength=\"\(num(layout.emissionNm[c]))\" EmissionWavelengthUnit=\"nm\""
            }
            x += ">\(channelSettings(layout.instrument, channel: c))</Channel>\n"
        }
        x +=
            "<TiffData IFD=\"0\" PlaneCount=\"\(planes.count)\"><UUID FileName=\"\(escape(fileName))\">urn:uuid:\(uuid)</UUID></TiffData>\n"
        for (i, p) in planes.enumerated() {
            let co = layout.coordinates(ofPlane: i)
            let theZ = co.z * ap + co.angle * layout.phases + co.phase
            let h = p.header
            x +=
                "<Plane TheZ=\"\(theZ)\" TheC=\"\(co.c)\" TheT=\"\(co.t)\" DeltaT=\"\(seconds(h.exposureStartNs))\" DeltaTUnit=\"s\""
            if p.acquired && !h.missing { x += " ExposureTime=\"\(num(h.state.exposureMs))\" ExposureTimeUnit=\"ms\"" }
            x += " PositionZ=\"\(num(h.state.zUm))\" PositionZUnit=\"µm\"/>\n"
        }
        x += "</Pixels>\n"
        if ap > 1 { x += "<AnnotationRef ID=\"Annotation:Modulo\"/>\n" }
        let simGeometry = simAnnotation(layout)
        if simGeometry != nil { x += "<AnnotationRef ID=\"Annotation:SIM\"/>\n" }
        x += "<AnnotationRef ID=\"Annotation:Planes\"/>\n</Image>\n<StructuredAnnotations>\n"
        if let simGeometry { x += simGeometry }
        if ap > 1 {
            x += """
                <XMLAnnotation ID="Annotation:Modulo" Namespace="openmicroscopy.org/omero/dimension/modulo"><Value>\
                <Modulo xmlns="http://www.openmicroscopy.org/Schemas/Additions/2011-09">\
                <ModuloAlongZ Type="other" TypeDescription="SIM pattern: angle × phase (phase fastest)" Start="0" Step="1" End="\(ap - 1)">
                """
            for a in 0..<layout.angles { for ph in 0..<layout.phases { x += "<Label>angle\(a)-phase\(ph)</Label>" } }
            x += "</ModuloAlongZ></Modulo></Value></XMLAnnotation>\n"
        }
        x += "<MapAnnotation ID=\"Annotation:Planes\" Namespace=\"moire.planes/v1\"><Value>\n"
        if let json = try? JSONEncoder().encode(layout) {
            x += "<M K=\"layout\">\(escape(String(decoding: json, as: UTF8.self)))</M>\n"
        }
        for (i, p) in planes.enumerated() {
            let h = p.header
            let status = !p.acquired ? "not-acquired" : (h.missing ? "missing" : "ok")
            let lost = p.acquired && h.missing ? (h.missingReason.map { " lost=\($0.rawValue)" } ?? "") : ""
            x +=
                "<M K=\"plane\(i)\">t=\(h.t) c=\(h.c) z=\(h.z) angle=\(h.angle) phase=\(h.phase) seq=\(h.seq) index=\(h.index) status=\(status)\(lost) pattern=\(h.state.pattern) lasers=\(h.state.lasers.joined(separator: ",")) zUm=\(num(h.state.zUm)) exposureMs=\(num(h.state.exposureMs)) startNs=\(h.exposureStartNs)</M>\n"
        }
        x += "</Value></MapAnnotation>\n</StructuredAnnotations>\n</OME>\n"
        return x
    }
}
