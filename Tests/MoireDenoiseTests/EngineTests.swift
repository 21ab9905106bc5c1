import MoireDenoise
import Testing

@Suite struct EngineTests {
    @Test func oneDNNEngineIsTheDebianTwoPointSix() throws {
        _ = try DNNLEngine()
        #expect(DNNLEngine.version.hasPrefix("2."))
    }
}
