#!/usr/bin/env bash
# End-to-end checks through the real executables: the demo protocol into an OME-TIFF that
# tifffile opens, the Python subscriber joining mid-run, kill -9 of the daemon then recovery,
# and malformed protocols. Prints "integration: N passed, M failed" last.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-$(swift build --show-bin-path)}
MOIRE="$BIN/moire"; MOIRED="$BIN/moired"
WORK=$(mktemp -d /tmp/moire-it.XXXXXX)
pass=0; fail=0
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
cleanup() { [ -n "${WB:-}" ] && kill -9 "$WB" "${WA:-}" 2>/dev/null; [ -n "${SLURMDIR:-}" ] && bash tests/slurm-cluster.sh stop "$SLURMDIR"; umount "$WORK/full" 2>/dev/null; [ -n "${DPID:-}" ] && kill -9 "$DPID" 2>/dev/null; [ -n "${PYPID:-}" ] && kill "$PYPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# Endpoints are ipc sockets in the work folder: no port can be taken by anything else on the machine.
PUB="ipc://$WORK/pub.sock"
# The hang watchdog of every wait below (seconds): long, because it is not a speed assumption; a
# loaded machine may take minutes to start a run (its FFT planning), and nothing waits it out.
export MOIRE_TEST_WATCHDOG_S=${MOIRE_TEST_WATCHDOG_S:-600}
# Waits (the watchdog, not a speed assumption) until the command given succeeds.
await() {
  for _ in $(seq 1 $((MOIRE_TEST_WATCHDOG_S * 10))); do "$@" && return 0; sleep 0.1; done
  echo "await: gave up on: $*"; return 1
}
# Sends a signal and waits for the process to exit; its exit status. A process that ignores the
# signal for the watchdog's time is a failure (124, killed), not a hung test run.
signal_and_wait() {  # signal name, pid
  kill "-$1" "$2" 2> /dev/null
  for _ in $(seq 1 $((MOIRE_TEST_WATCHDOG_S * 10))); do
    state=$(sed 's/.*) //' "/proc/$2/stat" 2> /dev/null | cut -d' ' -f1)
    if [ -z "$state" ] || [ "$state" = Z ]; then wait "$2"; return $?; fi
    sleep 0.1
  done
  echo "process $2 did not exit within $MOIRE_TEST_WATCHDOG_S s of SIG$1; killed" >&2
  kill -9 "$2" 2> /dev/null; wait "$2" 2> /dev/null
  return 124
}
# True when the file exists and holds at least N bytes.
has_bytes() { [ -e "$1" ] && [ "$(stat -c %s "$1")" -ge "$2" ]; }
# Starts moired on its own ipc control socket; returns when it says it listens.
start_daemon() {  # log file, then any extra moired options
  log=$1; shift
  "$MOIRED" --control "$CONTROL" --data-root "$WORK" --metrics none "$@" > "$log" 2>&1 &
  DPID=$!
  await grep -q "moired listening" "$log"
}
CONTROL="ipc://$WORK/control.sock"
FRAMES20=$((20 * 512 * 512 * 2))   # twenty 512×512 frames: the recording is well under way

# 1. The demo protocol: 180 planes of 512×512 uint16 with pixel size and per-plane t/angle/phase.
#    The run waits for the Python subscriber (--wait-subscribers) and runs in virtual time, so the
#    counts below hold however loaded the machine is.
sed "s|publish: .*|publish: $PUB|" sim-hardware/protocols/tirf-sim.yaml > "$WORK/tirf.yaml"
sed -i "s|rig: ../rigs/multisim.yaml|rig: $PWD/sim-hardware/rigs/multisim.yaml|" "$WORK/tirf.yaml"
python3 -u examples/python/subscribe.py "$PUB" "$MOIRE_TEST_WATCHDOG_S" > "$WORK/py.log" 2>&1 &
PYPID=$!
"$MOIRE" run "$WORK/tirf.yaml" --embedded --clock virtual --wait-subscribers 1 --out "$WORK/demo.ome.tif" --quiet > "$WORK/run.log" 2>&1
rc=$?
wait $PYPID; PYPID=
if [ $rc -eq 0 ] && python3 - "$WORK/demo.ome.tif" <<'PY'
import sys, re, tifffile, xml.etree.ElementTree as ET
ns = {"o": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
with tifffile.TiffFile(sys.argv[1]) as t:
    a = t.series[0].asarray()
    root = ET.fromstring(t.ome_metadata)
assert a.dtype.name == "uint16" and a.size == 180 * 512 * 512, (a.shape, a.dtype)
px = root.find(".//o:Pixels", ns)
assert abs(float(px.get("PhysicalSizeX")) - 0.065) < 1e-9
planes = root.findall(".//o:Plane", ns)
assert len(planes) == 180
m = {e.get("K"): e.text for e in root.iter("{http://www.openmicroscopy.org/Schemas/OME/2016-06}M")}
for i in range(180):
    kv = dict(x.split("=", 1) for x in m[f"plane{i}"].split())
    assert int(kv["t"]) == i // 9 and int(kv["angle"]) == (i // 3) % 3 and int(kv["phase"]) == i % 3, (i, kv)
    assert int(planes[i].get("TheT")) == i // 9 and int(planes[i].get("TheZ")) == i % 9
# The OME 2016-06 schema (ome-types ships it), checked by libxml2 through lxml: xmlschema (what
# ome-types validates with) mis-evaluates the schema's union key selectors and rejects any Laser.
import os, math, ome_types, lxml.etree as etree
with tifffile.TiffFile(sys.argv[1]) as t:
    text = t.ome_metadata
schema = etree.XMLSchema(etree.parse(os.path.join(os.path.dirname(ome_types.__file__), "ome-2016-06.xsd")))
assert schema.validate(etree.fromstring(text.encode())), schema.error_log.last_error
ome = ome_types.from_xml(text, validate=False)
lasers = {l.id: l for l in ome.instruments[0].lasers}
channel = ome.images[0].pixels.channels[0]
assert lasers[channel.light_source_settings.id].wavelength == 488, lasers
assert abs(channel.light_source_settings.attenuation - 0.9) < 1e-9           # 20 of 200 mW
assert ome.instruments[0].detectors[0].type.value == "CMOS" and channel.detector_settings.binning.value == "1x1"
assert channel.acquisition_mode.value == "StructuredIllumination" and ome.images[0].acquisition_date is not None
sim = {m.k: dict(kv.split("=") for kv in m.value.split()) for a in ome.structured_annotations.map_annotations
       if a.namespace == "moire.sim/v1" for m in a.value.ms}
assert sorted(sim) == ["gfp.angle0", "gfp.angle1", "gfp.angle2"], sim
for angle in sim.values():
    kx, ky, period = float(angle["kx"]), float(angle["ky"]), float(angle["periodUm"])
    assert abs(period * math.hypot(kx, ky) - 1) < 1e-4 and len(angle["phasesRad"].split(",")) == 3, angle
PY
then ok "demo recording opens in tifffile: 180 planes 512×512 uint16, pixel size, per-plane t/angle/phase; OME-XML valid against the schema (libxml2), with lasers, detector, channel light-source and detector settings, acquisition date and mode, SIM geometry per angle"; else bad "demo recording ($(tail -2 "$WORK/run.log"))"; fi

if tail -1 "$WORK/py.log" | python3 -c 'import json,sys; s=json.loads(sys.stdin.read()); sys.exit(0 if s["streams"]["raw"]==180 and s["gaps"]==0 and s["first"]=="start" and s["streams"].get("sr",0)>0 else 1)'; then
  ok "python example decodes all 180 raw frames and the live SR frames, contiguous sequence numbers ($(tail -1 "$WORK/py.log"))"; else bad "python example: $(tail -1 "$WORK/py.log")"; fi
# Join mid-run: a subscriber that starts once the recording is under way gets the run's start first,
# then contiguous frames; the run is stopped (SIGINT) once it has some. Small frames at a paced rate
# (a time point every 50 ms), so that a slow Python on a loaded machine keeps up with the publisher.
sed -e "s|count: 20|count: 400|" -e "s|interval_ms: 0|interval_ms: 50|" -e "s|roi: \[512, 512\]|roi: [128, 128]|" \
  "$WORK/tirf.yaml" > "$WORK/late.yaml"
"$MOIRE" run "$WORK/late.yaml" --embedded --out "$WORK/late.ome.tif" --quiet > "$WORK/late-run.log" 2>&1 &
RPID=$!
await has_bytes "$WORK/late.ome.tif" $((20 * 128 * 128 * 2))
python3 -u examples/python/subscribe.py "$PUB" "$MOIRE_TEST_WATCHDOG_S" > "$WORK/py-late.log" 2>&1 &
LATE=$!
await grep -q "seq=" "$WORK/py-late.log"
signal_and_wait INT $RPID
wait $LATE
if tail -1 "$WORK/py-late.log" | python3 -c 'import json,sys; s=json.loads(sys.stdin.read()); sys.exit(0 if s["first"]=="start" and s["gaps"]==0 and 0 < s["streams"]["raw"] < 3600 else 1)'; then
  ok "python subscriber started mid-run receives start first ($(tail -1 "$WORK/py-late.log"))"; else bad "late python subscriber: $(tail -1 "$WORK/py-late.log")"; fi

# 2. kill -9 of the daemon mid-acquisition, then recover.
start_daemon "$WORK/daemon.log"
sed -i "s|count: 20|count: 400|" "$WORK/tirf.yaml"
"$MOIRE" run "$WORK/tirf.yaml" --daemon "$CONTROL" --out "$WORK/killed.ome.tif" --quiet > "$WORK/drun.log" 2>&1 &
CPID=$!
await has_bytes "$WORK/killed.ome.tif" $FRAMES20
kill -9 "$DPID"; DPID=
wait $CPID 2>/dev/null
if "$MOIRE" recover "$WORK/killed.ome.tif" --out "$WORK/recovered.ome.tif" > "$WORK/recover.log" 2>&1 && python3 - "$WORK" <<'PY'
import sys, struct, zlib, json, tifffile, numpy as np
w = sys.argv[1]
idx = open(f"{w}/killed.ome.tif.moire-index", "rb").read()
n = struct.unpack_from("<I", idx, 12)[0]; pos = 16 + n + 4; complete = []
while pos + 32 <= len(idx):                         # intact records name the complete frames
    tag, ln, off, nb, dcrc = struct.unpack_from("<IIQQI", idx, pos)
    if tag != 0x5246524D or pos + 28 + ln + 4 > len(idx): break
    if zlib.crc32(idx[pos:pos + 28 + ln]) != struct.unpack_from("<I", idx, pos + 28 + ln)[0]: break
    try:
        record = json.loads(idx[pos + 28:pos + 28 + ln])
        missing = not record.get("acquired", True) or record.get("header", {}).get("missing", False)
    except ValueError: missing = False
    complete.append((off, nb, dcrc, missing)); pos += 28 + ln + 4
raw = open(f"{w}/killed.ome.tif", "rb").read()
# Frames the run itself recorded missing (a real-time run on a loaded machine may lose one) are
# zero planes in the file and stay "missing" in the recovery: only acquired frames are compared.
good = [c for c in complete if zlib.crc32(raw[c[0]:c[0] + c[1]]) == c[2] and not c[3]]
with tifffile.TiffFile(f"{w}/recovered.ome.tif") as t:
    a = t.series[0].asarray().reshape(-1, 512, 512)
    m = {e.get("K"): e.text for e in __import__("xml.etree.ElementTree", fromlist=["x"]).fromstring(t.ome_metadata)
         .iter("{http://www.openmicroscopy.org/Schemas/OME/2016-06}M")}
acq = [i for i in range(a.shape[0]) if "status=ok" in m[f"plane{i}"]]
assert len(good) > 9 and len(acq) == len(good), (len(good), len(acq))
for i, (off, nb, _, _) in zip(acq, good):
    assert np.array_equal(a[i], np.frombuffer(raw[off:off + nb], "<u2").reshape(512, 512))
print(f"{len(good)} complete frames recovered, {a.shape[0] - len(acq)} padding planes flagged", file=sys.stderr)
PY
then ok "kill -9 of moired mid-run: moire recover keeps every complete frame and nothing else ($(head -1 "$WORK/recover.log"))"; else bad "recovery: $(cat "$WORK/recover.log")"; fi
"$MOIRE" inspect "$WORK/recovered.ome.tif" > "$WORK/inspect.log" 2>&1 && ok "inspect reads the recovered file" || bad "inspect: $(cat "$WORK/inspect.log")"

# 2b. SIGTERM to the daemon mid-run: graceful, the recording is closed and valid.
rm -f "$WORK/control.sock"
start_daemon "$WORK/daemon2.log"
"$MOIRE" run "$WORK/tirf.yaml" --daemon "$CONTROL" --out "$WORK/term.ome.tif" --quiet > "$WORK/drun2.log" 2>&1 &
CPID=$!
await has_bytes "$WORK/term.ome.tif" $FRAMES20
signal_and_wait TERM "$DPID"; drc=$?; DPID=
wait $CPID 2>/dev/null
if [ $drc -eq 0 ] && "$MOIRE" inspect "$WORK/term.ome.tif" > "$WORK/term.log" 2>&1 && grep -q "closed cleanly" "$WORK/term.log" \
   && grep -q "devices safe" "$WORK/daemon2.log"; then
  ok "SIGTERM to moired mid-run: exit 0, recording closed cleanly ($(grep planes: "$WORK/term.log" | xargs))"; else bad "SIGTERM: rc=$drc $(tail -3 "$WORK/daemon2.log") $(cat "$WORK/term.log")"; fi

# 2b'. systemd readiness (Type=notify): moired says READY=1 on $NOTIFY_SOCKET once its control socket
#      answers, and STOPPING=1 on SIGTERM; both binaries give --version and shell completions.
python3 - "$WORK/notify.sock" > "$WORK/notify.log" 2>&1 <<'PY' &
import os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listener.bind(sys.argv[1])
listener.settimeout(float(os.environ["MOIRE_TEST_WATCHDOG_S"]))
print("bound", flush=True)
for _ in range(2):
    print(listener.recv(4096).decode().replace("\n", " "), flush=True)
PY
NPID=$!
await grep -q bound "$WORK/notify.log"
rm -f "$WORK/control.sock"
export NOTIFY_SOCKET="$WORK/notify.sock"
start_daemon "$WORK/daemon-notify.log"
unset NOTIFY_SOCKET
await grep -q "READY=1" "$WORK/notify.log"
"$MOIRE" status --daemon "$CONTROL" > "$WORK/notify-status.log" 2>&1; src=$?
# The daemon ran itself again with OpenMP's passive wait policy (docs/operations.md), as the same
# process systemd started: the PID it reports in MAINPID= is the one started.
policy=$(tr '\0' '\n' < /proc/$DPID/environ 2>/dev/null | grep '^OMP_WAIT_POLICY=')
DPID_NOTIFY=$DPID
signal_and_wait TERM "$DPID"; DPID=
wait $NPID
versions="$("$MOIRE" --version) / $("$MOIRED" --version)"
completions=ok
for tool in "$MOIRE" "$MOIRED"; do
  for shell in bash zsh fish; do "$tool" --generate-completion-script $shell > "$WORK/completion" 2>&1 && [ -s "$WORK/completion" ] || completions="no $shell for $tool"; done
  "$tool" --generate-completion-script bash | bash -n || completions="bash rejects $tool's completion script"
done
if [ $src -eq 0 ] && grep -q "READY=1 .*MAINPID=$DPID_NOTIFY\b" "$WORK/notify.log" && grep -q "STOPPING=1" "$WORK/notify.log" \
   && [ "$policy" = "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}" ] && [ "$completions" = ok ] && echo "$versions" | grep -Eq "^[0-9]+\.[0-9]+.* / [0-9]+\.[0-9]+"; then
  ok "systemd readiness: READY=1 once the daemon answers (MAINPID the started one, $policy), STOPPING=1 on SIGTERM; --version ($versions); completions for bash, zsh, fish"; else
  bad "readiness/version/completions: status rc=$src, pid $DPID_NOTIFY, $(cat "$WORK/notify.log" | tr '\n' ' ') policy=$policy versions=$versions completions=$completions"; fi

# 2c. Ctrl-C (SIGINT) to an embedded run: stops after the group, exit 130, valid recording.
sed "s|count: 400|count: 200|" "$WORK/tirf.yaml" > "$WORK/long.yaml"
"$MOIRE" run "$WORK/long.yaml" --embedded --no-publish --out "$WORK/int.ome.tif" --quiet > "$WORK/int.log" 2>&1 &
IPID=$!
await has_bytes "$WORK/int.ome.tif" $FRAMES20
signal_and_wait INT $IPID; irc=$?
if [ $irc -eq 130 ] && grep -q "stopped" "$WORK/int.log" && "$MOIRE" inspect "$WORK/int.ome.tif" > "$WORK/int-inspect.log" 2>&1 \
   && grep -q "closed cleanly" "$WORK/int-inspect.log"; then
  ok "SIGINT to moire run: exit 130, run stopped, recording closed ($(grep planes: "$WORK/int-inspect.log" | xargs))"; else bad "SIGINT: rc=$irc $(cat "$WORK/int.log")"; fi

# 2d. Simulated camera faults from the command line.
sed "s|count: 400|count: 3|" "$WORK/tirf.yaml" > "$WORK/short.yaml"
out=$("$MOIRE" run "$WORK/short.yaml" --embedded --clock virtual --no-publish --out "$WORK/drop.ome.tif" --quiet --fault drop:5 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "1 missing" && "$MOIRE" inspect "$WORK/drop.ome.tif" | grep -q "missing plane indices: 5"; then
  ok "dropped frame recorded as missing (index 5), run completed"; else bad "drop: rc=$rc $out"; fi
out=$("$MOIRE" run "$WORK/short.yaml" --embedded --clock virtual --no-publish --out "$WORK/stall.ome.tif" --quiet --fault stall:12 2>&1); rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q "stalled" && "$MOIRE" inspect "$WORK/stall.ome.tif" | grep -q "12 acquired"; then
  ok "camera stall fires the deadline: exit 1, clear error, 12 frames kept"; else bad "stall: rc=$rc $out"; fi

# 2e. moire subscribe records what it receives into an OME-TIFF.
"$MOIRE" subscribe "$PUB" --topic raw.gfp --out "$WORK/sub.ome.tif" --quiet --timeout "$MOIRE_TEST_WATCHDOG_S" > "$WORK/sub.log" 2>&1 &
SPID=$!
"$MOIRE" run "$WORK/short.yaml" --embedded --clock virtual --wait-subscribers 1 --no-record --quiet > /dev/null 2>&1
wait $SPID; src=$?
if [ $src -eq 0 ] && grep -q "received 27 frames, 0 missing, 0 sequence gaps" "$WORK/sub.log" \
   && python3 -c "import tifffile,sys; a=tifffile.imread(sys.argv[1]); sys.exit(0 if a.size==27*512*512 else 1)" "$WORK/sub.ome.tif"; then
  ok "moire subscribe --out: 27 frames received and written to an OME-TIFF tifffile reads"; else bad "subscribe: rc=$src $(cat "$WORK/sub.log")"; fi

# 2f. Offline: reconstruct, preview, train and denoise the replay fixture.
FIX=sim-hardware/recordings/replay-fixture.ome.tif
if "$MOIRE" reconstruct "$FIX" --out "$WORK/fx-sr.ome.tif" --na 1.49 --emission-nm 525 --background 100 --k-prior 0.1807@8 > "$WORK/fx.log" 2>&1 \
   && "$MOIRE" preview "$FIX" --out "$WORK/fx.png" --na 1.49 --emission-nm 525 --background 100 --k-prior 0.1807@8 >> "$WORK/fx.log" 2>&1 \
   && "$MOIRE" train "$FIX" --out "$WORK/w.bin" --steps 20 --crop 32 --noise 100,0.46,1.4 >> "$WORK/fx.log" 2>&1 \
   && "$MOIRE" denoise "$FIX" --out "$WORK/fx-den.ome.tif" --weights "$WORK/w.bin" --first-steps 2 --adapt-steps 1 --noise 100,0.46,1.4 >> "$WORK/fx.log" 2>&1 \
   && python3 -c "import tifffile,sys; a=tifffile.imread(sys.argv[1]); b=tifffile.imread(sys.argv[2]); sys.exit(0 if a.shape[-1]==128 and b.size==18*64*64 and open(sys.argv[3],'rb').read(4)==b'\x89PNG' else 1)" "$WORK/fx-sr.ome.tif" "$WORK/fx-den.ome.tif" "$WORK/fx.png"; then
  ok "offline reconstruct, preview, train and denoise of the replay fixture write files tifffile reads"; else bad "offline tools: $(tail -5 "$WORK/fx.log")"; fi

# 2f''. Supervised training (how the shipped models are made): a noise-free target per input (here the
#       fixture's planes box-filtered, as float32 planes tifffile writes); one target for two inputs is refused.
python3 -c "import tifffile,numpy,sys; a=tifffile.imread(sys.argv[1]).astype('float32').reshape(-1,64,64); tifffile.imwrite(sys.argv[2], (a+numpy.roll(a,1,1)+numpy.roll(a,1,2)+numpy.roll(a,1,(1,2)))/4)" "$FIX" "$WORK/fx-clean.tif"
"$MOIRE" train "$FIX" --targets "$WORK/fx-clean.tif" --out "$WORK/w-sup.bin" --steps 10 --crop 32 --noise 100,0.46,1.4 > "$WORK/sup.log" 2>&1; suprc=$?
refused=$("$MOIRE" train "$FIX" "$FIX" --targets "$WORK/fx-clean.tif" --out "$WORK/w-sup2.bin" --steps 10 --crop 32 --noise 100,0.46,1.4 2>&1); refrc=$?
if [ $suprc -eq 0 ] && [ -s "$WORK/w-sup.bin" ] && [ $refrc -ne 0 ] && echo "$refused" | grep -q "one per input" && [ ! -e "$WORK/w-sup2.bin" ]; then
  ok "moire train --targets: supervised steps against noise-free planes write weights; a missing target is refused"
else bad "train --targets: rc=$suprc/$refrc $refused $(tail -3 "$WORK/sup.log")"; fi

# 2f'. Frames acquired elsewhere through the live stages: the fixture's planes as a plain TIFF stack
#      (written by tifffile, no Moiré metadata) replayed with its protocol give the same raw planes
#      and the same live SR frames as replaying the recording; without --protocol it is refused.
sed -e "s|rig: ../rigs/multisim.yaml|rig: $PWD/sim-hardware/rigs/multisim.yaml|" -e "/^outputs:/,\$d" \
  sim-hardware/protocols/replay-fixture.yaml > "$WORK/plain.yaml"
printf 'reconstruction: {record: true}\n' >> "$WORK/plain.yaml"
python3 -c "import tifffile,sys; tifffile.imwrite(sys.argv[2], tifffile.imread(sys.argv[1]), photometric='minisblack')" "$FIX" "$WORK/plain.tif"
"$MOIRE" replay "$FIX" --protocol "$WORK/plain.yaml" --out "$WORK/rp-rec.ome.tif" > "$WORK/plain.log" 2>&1; rprc=$?
"$MOIRE" replay "$WORK/plain.tif" --protocol "$WORK/plain.yaml" --out "$WORK/rp-plain.ome.tif" >> "$WORK/plain.log" 2>&1; pprc=$?
refused=$("$MOIRE" replay "$WORK/plain.tif" 2>&1); nprc=$?
if [ $rprc -eq 0 ] && [ $pprc -eq 0 ] && [ $nprc -ne 0 ] && echo "$refused" | grep -q "plain TIFF stack replays with --protocol" \
   && grep -q "replayed 18 frames, 0 missing, no device state to check (a plain stack): completed" "$WORK/plain.log" \
   && [ "$(grep -c "live SIM: 2 SR frames from 2 complete phase sets" "$WORK/plain.log")" = 2 ] \
   && python3 - "$WORK" "$FIX" <<'PY'
import sys, numpy as np, tifffile
w, fixture = sys.argv[1], sys.argv[2]
assert np.array_equal(tifffile.imread(f"{w}/rp-plain.ome.tif"), tifffile.imread(fixture))
a, b = tifffile.imread(f"{w}/rp-rec.sr.ome.tif"), tifffile.imread(f"{w}/rp-plain.sr.ome.tif")
assert a.shape == b.shape == (2, 128, 128), (a.shape, b.shape)
assert np.array_equal(a, b)
PY
then ok "moire replay of a plain TIFF stack (tifffile) with its protocol: the same raw planes and live SR frames as replaying the recording, the live stages reported; refused without --protocol"
else bad "plain-stack replay: rc=$rprc/$pprc/$nprc $refused $(tail -5 "$WORK/plain.log")"; fi

# 2g. SIM denoising offline (recorrupted sets reconstructed twice) and denoising of a PNG.
if "$MOIRE" reconstruct "$FIX" --out "$WORK/fx-srden.ome.tif" --na 1.49 --emission-nm 525 --background 100 --k-prior 0.1807@8 \
     --denoise 6 --noise 100,0.46,1.4 > "$WORK/fxd.log" 2>&1 \
   && "$MOIRE" denoise Tests/Data/png/grey16-dynamic.png --out "$WORK/png-den.ome.tif" --first-steps 2 --adapt-steps 0 --noise 0,1,1 >> "$WORK/fxd.log" 2>&1 \
   && python3 -c "import tifffile,sys; a=tifffile.TiffFile(sys.argv[1]); b=tifffile.imread(sys.argv[2]); sys.exit(0 if 'denoised SR' in a.ome_metadata and a.asarray().shape[-1]==128 and b.shape[-2:]==(30,40) else 1)" "$WORK/fx-srden.ome.tif" "$WORK/png-den.ome.tif"; then
  ok "moire reconstruct --denoise writes denoised SR frames; moire denoise reads a 16-bit PNG"; else bad "SIM/PNG denoising: $(tail -5 "$WORK/fxd.log")"; fi

# 2h. Lattice light-sheet: a live llsm run (volumes published and recorded) and offline deskew + deconvolution.
sed -e "s|rig: ../rigs/lattice.yaml|rig: $PWD/sim-hardware/rigs/lattice.yaml|" -e "s|planes: 100|planes: 40|" -e "s|count: 2|count: 1|" \
    -e "s|roi: \[256, 128\]|roi: [128, 64]|" -e "s|recording: .*|recording: $WORK/lattice.ome.tif|" sim-hardware/protocols/lattice-beads.yaml > "$WORK/lattice.yaml"
if "$MOIRE" run "$WORK/lattice.yaml" --embedded --no-publish --quiet > "$WORK/llsm.log" 2>&1 \
   && grep -q "live light sheet: 1 volumes" "$WORK/llsm.log" \
   && "$MOIRE" reconstruct "$WORK/lattice.ome.tif" --llsm --iterations 3 --out "$WORK/llsm-vol.ome.tif" --preview "$WORK/llsm.png" >> "$WORK/llsm.log" 2>&1 \
   && python3 -c "import tifffile,sys; a=tifffile.TiffFile(sys.argv[1]); b=tifffile.TiffFile(sys.argv[2]); s=a.series[0]; w=128+int(40*0.4*0.8526/0.104); sys.exit(0 if s.axes.endswith('ZYX') and s.shape[-3:]==(40,64,w) and b.series[0].shape[-3:]==(40,64,w) and 'PhysicalSizeZ' in a.ome_metadata else 1)" "$WORK/llsm-vol.ome.tif" "$WORK/lattice.vol.ome.tif"; then
  ok "llsm: live volumes recorded and moire reconstruct --llsm writes ZYX volumes of the deskewed width tifffile reads"; else bad "llsm: $(tail -5 "$WORK/llsm.log")"; fi

# 2i. 3D-SIM offline on a stack from an independent forward model (numpy: beads, three-beam pattern,
#     Gaussian PSF): the pattern found from its period alone, SR volumes on the 2× grid tifffile reads.
if python3 tests/make_sim3d_stack.py "$WORK/s3d.tif" 96 16 > "$WORK/s3d-truth.json" 2> "$WORK/s3d.log" \
   && "$MOIRE" reconstruct "$WORK/s3d.tif" --sim3d --z-planes 16 --z-step-um 0.125 --pixel-um 0.08 --k-prior 0.42 --background 100 \
        --out "$WORK/s3d-sr.ome.tif" > "$WORK/s3d.out" 2>> "$WORK/s3d.log" \
   && python3 - "$WORK/s3d-truth.json" "$WORK/s3d.out" "$WORK/s3d-sr.ome.tif" <<'PY'
import json, re, sys, tifffile
truth = json.load(open(sys.argv[1]))
found = [(float(k), float(o)) for k, o in re.findall(r"\|k\| ([0-9.]+) µm⁻¹ .*?orientation ([0-9.-]+)°", open(sys.argv[2]).read())]
assert len(found) == 3, found
for (k, o), t in zip(found, truth["orientations"]):
    assert abs(k - truth["k"]) / truth["k"] < 0.01, (k, truth["k"])
    assert min(abs(o - t), 180 - abs(o - t)) < 0.2, (o, t)
f = tifffile.TiffFile(sys.argv[3])
assert f.series[0].shape[-3:] == (16, 192, 192), f.series[0].shape
assert 'PhysicalSizeX="0.04' in f.ome_metadata
PY
then ok "3D-SIM: moire reconstruct --sim3d finds the pattern (|k| within 1 %, orientations within 0.2°) of an independent numpy forward model and writes 192×192×16 SR volumes"
else bad "3D-SIM: $(tail -5 "$WORK/s3d.log") $(cat "$WORK/s3d.out" 2>/dev/null | tail -4)"; fi

# 2i. Real drivers on byte-level peers: the demo protocol unchanged on the DMD rig (USB3 Vision camera,
#     DLPC900, serial controller), recorded, and its SIM patterns estimated from the recording; then
#     `moire devices` on a machine without USB devices or serial ports.
if "$MOIRE" run sim-hardware/protocols/tirf-sim.yaml --rig hardware-profiles/rigs/dmd-sim.yaml --embedded --no-publish --quiet \
     --out "$WORK/dmd.ome.tif" > "$WORK/dmd.log" 2>&1 \
   && grep -q "completed — 180 frames, 0 missing" "$WORK/dmd.log" && grep -q "180 planes, 20 time points, 0 missing" "$WORK/dmd.log" \
   && "$MOIRE" reconstruct "$WORK/dmd.ome.tif" --out "$WORK/dmd-sr.ome.tif" > "$WORK/dmd-sr.log" 2>&1 \
   && [ "$(grep -c 'µm⁻¹ (period 0.18[01]' "$WORK/dmd-sr.log")" -eq 3 ]; then
  ok "dmd-sim rig: tirf-sim.yaml unchanged on the real drivers and peers, 180 frames, patterns estimated at the DMD's period"
else bad "dmd-sim rig: $(tail -3 "$WORK/dmd.log") $(tail -4 "$WORK/dmd-sr.log" 2>/dev/null)"; fi
out=$("$MOIRE" run sim-hardware/protocols/tirf-sim.yaml --rig hardware-profiles/rigs/dmd.yaml --embedded --no-publish --quiet --out "$WORK/real.ome.tif" 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "no USB device" && [ ! -e "$WORK/real.ome.tif" ]; then
  ok "the real DMD rig without its devices → exit $rc, clear error, no recording: $out"; else bad "real rig without devices: rc=$rc $out"; fi
out=$("$MOIRE" devices --profiles hardware-profiles 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "^usb: [0-9]* device(s) on the bus, 0 matching a profile" && echo "$out" | grep -q "^serial:"; then
  ok "moire devices: $(echo "$out" | tr '\n' ' ')"; else bad "moire devices: rc=$rc $out"; fi

# 3. Malformed protocols: non-zero exit, file:line:column and the field, nothing touched.
check_bad() {  # name, sed expression, expected text
  sed "$2" "$WORK/tirf.yaml" > "$WORK/bad.yaml"
  out=$("$MOIRE" run "$WORK/bad.yaml" --embedded --out "$WORK/bad.ome.tif" --quiet 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "bad.yaml:[0-9]*:[0-9]*" && echo "$out" | grep -q "$3" && [ ! -e "$WORK/bad.ome.tif" ]; then
    ok "malformed protocol ($1) → exit $rc: $out"; else bad "malformed protocol ($1): rc=$rc $out"; fi
}
check_bad "YAML syntax" 's|^name: .*|name: [unclosed|' "syntax"
check_bad "unknown field" 's|^mode: sim2d|mode: sim2d\nfocus_lock: true|' "unknown field 'focus_lock'"
check_bad "exposure out of range" 's|exposure_ms: 5|exposure_ms: 50000|' "channels\[0\].exposure_ms"
check_bad "unknown device" 's|laser: l488|laser: l405|' "unknown device 'l405'"
check_bad "publish beyond loopback" 's|publish: .*|publish: tcp://0.0.0.0:5560|' "not a loopback address"
sed 's|^mode: sim2d|mode: llsm|' "$WORK/tirf.yaml" > "$WORK/bad.yaml"
sed -i "s|rig: .*|rig: $WORK/wf-rig.yaml|" "$WORK/bad.yaml"
printf 'moire: 1\nname: widefield rig\ndevices:\n  camera: {profile: %s}\n  lasers: [{name: l488, profile: %s}]\noptics: {objective_na: 1.4, magnification: 60, immersion_index: 1.518}\n' \
  "$PWD/sim-hardware/profiles/camera-sim-scmos.yaml" "$PWD/sim-hardware/profiles/laser-sim-488.yaml" > "$WORK/wf-rig.yaml"
out=$("$MOIRE" validate "$WORK/bad.yaml" 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "bad.yaml:4:7" && echo "$out" | grep -q "cannot do mode 'llsm'"; then ok "mode the rig cannot do → exit $rc: $out"; else bad "mode check: $out"; fi

# 4. Hostile clients against the real daemon: only its owner commands it, a fake daemon is not
#    believed, recordings stay under the data root, a stalled subscriber costs a bounded queue.
rm -f "$WORK/control.sock"
start_daemon "$WORK/daemon4.log" --metrics "tcp://127.0.0.1:*"
METRICS=$(grep -o "metrics at http://[^ ]*" "$WORK/daemon4.log" | head -1 | cut -d' ' -f3)
out=$("$MOIRE" status --daemon "$CONTROL" 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "moired pid $DPID" && [ "$(stat -c %a "$WORK/control.sock")" = 600 ]; then
  ok "moire status names the daemon it reached; control socket mode 600 ($(echo "$out" | head -1))"; else bad "status: rc=$rc $out"; fi
if [ "$(id -u)" = 0 ] && command -v setpriv > /dev/null; then
  as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
  out=$(as_nobody "$MOIRE" status --daemon "$CONTROL" 2>&1); rc=$?
  if [ $rc -ne 0 ]; then ok "another user cannot reach the daemon (exit $rc: $out)"; else bad "another user reached the daemon: $out"; fi
  # Loosened by hand (directory and socket opened to all): the daemon still refuses by the sender's uid.
  chmod 711 "$WORK"; chmod 666 "$WORK/control.sock"
  out=$(as_nobody "$MOIRE" status --daemon "$CONTROL" --daemon-user root 2>&1); rc=$?
  chmod 700 "$WORK"; chmod 600 "$WORK/control.sock"
  if [ $rc -ne 0 ] && echo "$out" | grep -q "uid 65534" && grep -q "control request refused" "$WORK/daemon4.log"; then
    ok "a request from another user's process is refused and logged (exit $rc: $out)"; else bad "cross-user request: rc=$rc $out"; fi
fi
mkdir -p "$WORK/open"; chmod 777 "$WORK/open"
python3 - "$WORK/open/fake.sock" > "$WORK/fake.log" 2>&1 <<'PY' &
import json, sys, zmq
s = zmq.Context().socket(zmq.REP); s.bind("ipc://" + sys.argv[1]); print("fake listening", flush=True)
while True:
    s.recv(); s.send(json.dumps({"ok": True, "state": "idle", "run": "fake", "frames": 18, "planned": 18}).encode())
PY
FAKE=$!
await grep -q "fake listening" "$WORK/fake.log"
out=$("$MOIRE" run "$WORK/tirf.yaml" --daemon "ipc://$WORK/open/fake.sock" --quiet 2>&1); rc=$?
kill $FAKE 2>/dev/null
if [ $rc -ne 0 ] && echo "$out" | grep -q "written by others" && ! echo "$out" | grep -q "started"; then
  ok "moire run refuses a fake daemon in a directory others can write (exit $rc)"; else bad "fake daemon: rc=$rc $out"; fi
# The Python package, installed from the checkout with pip, against this daemon.
sed -e "s|count: [0-9]*|count: 20|" -e "s|interval_ms: 0|interval_ms: 50|" -e "s|roi: \[512, 512\]|roi: [128, 128]|" \
  "$WORK/tirf.yaml" > "$WORK/py.yaml"
if { python3 -m pip install -q --no-deps --target "$WORK/pylib" ./python \
     || python3 -m pip install -q --no-build-isolation --no-deps --target "$WORK/pylib" ./python; } > "$WORK/pip.log" 2>&1 \
   && out=$(PYTHONPATH="$WORK/pylib" python3 tests/python_client_check.py "$CONTROL" "$WORK/py.yaml" "$WORK" 2>&1); then
  ok "python package (pip-installed): control with the owner check, sync and asyncio subscribers, recording reader ($(echo "$out" | tail -1 | cut -c1-200))"; else
  bad "python package: $(cat "$WORK/pip.log" | tail -3) $out"; fi
# The napari live view (the package's dock widget in a real napari.Viewer, headless on Xvfb, OpenGL
# from Mesa) on a run of this daemon.
# The 2D-SIM run denoises live too (a den layer); a small lattice run on the same bus gives a volume layer.
{ cat "$WORK/py.yaml"; printf 'denoise: {steps_per_frame: 1, first_steps: 4, crop: 32, batch: 1}\n'; } > "$WORK/napari-sim.yaml"
sed -e "s|publish: .*|publish: $PUB|" -e "/recording:/d" "$WORK/lattice.yaml" > "$WORK/napari-vol.yaml"
if out=$(PYTHONPATH="$WORK/pylib" QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" \
    python3 tests/napari_live_check.py "$CONTROL" "$WORK/napari-sim.yaml" "$WORK/napari-vol.yaml" "$WORK" 2> "$WORK/napari.err"); then
  ok "napari live view: widget docked in a headless napari.Viewer, raw/SR/denoised/widefield and volume layers follow the runs, napari's screenshot of the canvas ($(echo "$out" | tail -1 | cut -c1-160))"; else
  bad "napari live view: $out $(tail -3 "$WORK/napari.err")"; fi
out=$("$MOIRE" run "$WORK/tirf.yaml" --daemon "$CONTROL" --out /tmp/moire-outside-$$.ome.tif --quiet 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "outside the daemon's data root" && [ ! -e /tmp/moire-outside-$$.ome.tif ]; then
  ok "a recording outside the daemon's data root is refused (exit $rc)"; else bad "data root: rc=$rc $out"; fi
# A stalled subscriber (never reads, a one-message queue) during 300 frames of 512×512 (150 MiB):
# the daemon's peak memory grows by far less than the 150 MiB it published (an unbounded queue
# would hold them all), and the daemon says so. The bound is half of that: its 16 MiB budget plus
# what the rest of the pipeline holds at its peak, which on a loaded machine reached +57 MiB
# (2026-12-01, two busy loops; +0 on a quiet machine, where the first run peaks as high).
cat > "$WORK/bus.yaml" <<YAML
moire: 1
name: stalled subscriber
rig: $PWD/sim-hardware/rigs/multisim.yaml
mode: widefield
camera: {roi: [512, 512]}
channels:
  - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 2, emission_nm: 525}
timelapse: {count: 300, interval_ms: 0}
outputs: {publish: "$PUB", subscriber_buffer_mb: 16}
YAML
peak() { awk '/VmHWM/ {print $2}' "/proc/$DPID/status"; }
python3 tests/scrape_metrics.py "$METRICS" > "$WORK/metrics0.json" 2> "$WORK/metrics.log"
"$MOIRE" run "$WORK/bus.yaml" --daemon "$CONTROL" --out "$WORK/bus0.ome.tif" --quiet > /dev/null 2>&1
before=$(peak)
python3 -u tests/stalled_subscriber.py "$PUB" 600 > "$WORK/stalled.log" 2>&1 &
STALLED=$!
await grep -q connected "$WORK/stalled.log"
"$MOIRE" run "$WORK/bus.yaml" --daemon "$CONTROL" --out "$WORK/bus1.ome.tif" --quiet > "$WORK/bus-run.log" 2>&1; rc=$?
after=$(peak)
kill $STALLED 2>/dev/null
grown=$(( (after - before) / 1024 ))
if [ $rc -eq 0 ] && [ $grown -lt 75 ] && grep -q "not keeping up" "$WORK/daemon4.log"; then
  ok "stalled subscriber: daemon peak memory +$grown MiB over a run without it (budget 16 MiB, 150 MiB published), logged"; else
  bad "stalled subscriber: rc=$rc, peak +$grown MiB, log: $(grep -c 'not keeping up' "$WORK/daemon4.log") warnings"; fi
# Metrics: scraped over HTTP and parsed by prometheus_client; the two widefield runs of 300 frames
# each moved the counters by exactly that much, and the Python client's SIM run left stage latencies.
if python3 tests/scrape_metrics.py "$METRICS" > "$WORK/metrics1.json" 2>> "$WORK/metrics.log" \
   && out=$(python3 - "$WORK/metrics0.json" "$WORK/metrics1.json" 2>&1 <<'PY'
import json, sys
before, after = (json.load(open(path)) for path in sys.argv[1:])
moved = lambda key: after.get(key, 0) - before.get(key, 0)
delivered = moved('moire_raw_frames_total{result="delivered"}')
completed = moved('moire_runs_total{reason="completed"}')
latencies = after.get('moire_stage_latency_seconds_count{stage="sim"}', 0)
assert delivered == 600 and completed == 2, (delivered, completed)
assert latencies > 0 and after.get('moire_sim_sets_total{result="reconstructed"}', 0) > 0, after
print(f"+{delivered:.0f} raw frames, +{completed:.0f} completed runs, {latencies:.0f} SR latencies, {len(after)} samples")
PY
); then ok "Prometheus endpoint $METRICS parsed by prometheus_client: $out"; else
  bad "metrics: $(tail -3 "$WORK/metrics.log") — daemon log: $(tail -5 "$WORK/daemon4.log")"; fi
signal_and_wait TERM "$DPID"; DPID=

# 5. A full disk (a 1 MiB tmpfs; needs root): the run stops with the reason named, the devices are
#    made safe, and a recovery onto the full disk leaves no partial file.
mkdir -p "$WORK/full"
if mount -t tmpfs -o size=1m tmpfs "$WORK/full" 2> /dev/null; then
  out=$("$MOIRE" run "$WORK/tirf.yaml" --embedded --no-publish --out "$WORK/full/run.ome.tif" --quiet --verbose 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "no space left on the device" && echo "$out" | grep -q "hardware safe"; then
    ok "recording onto a full disk: exit $rc, 'no space left on the device' named, hardware safe"; else
    bad "full disk run: rc=$rc $(echo "$out" | grep -i -m3 "error\|space\|safe")"; fi
  out=$("$MOIRE" recover "$WORK/killed.ome.tif" --out "$WORK/full/rec.ome.tif" 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "no space left" && [ ! -e "$WORK/full/rec.ome.tif" ]; then
    ok "recover onto a full disk: exit $rc, reason named, no partial file left"; else
    bad "full disk recover: rc=$rc $out $(ls -la "$WORK/full")"; fi
  umount "$WORK/full"
fi

# 6. Offline tools never replace a file without --overwrite, and never their own input.
before=$(md5sum < "$WORK/fx-sr.ome.tif")
out=$("$MOIRE" reconstruct "$FIX" --out "$WORK/fx-sr.ome.tif" --na 1.49 --emission-nm 525 --background 100 2>&1); rc1=$?
out2=$("$MOIRE" denoise "$WORK/fx-sr.ome.tif" --out "$WORK/fx-sr.ome.tif" --overwrite 2>&1); rc2=$?
if [ $rc1 -eq 2 ] && echo "$out" | grep -q "already exists" && [ $rc2 -eq 2 ] && echo "$out2" | grep -q "replace the input" \
   && [ "$(md5sum < "$WORK/fx-sr.ome.tif")" = "$before" ]; then
  ok "offline tools refuse an existing output without --overwrite, and their own input even with it; the file is unchanged"; else
  bad "offline overwrite: rc=$rc1/$rc2 $out $out2"; fi

# 7. Batch reprocessing on a one-node Slurm cluster from Debian's packages (started here; needs
#    root): `moire batch submit` runs the parts as an sbatch array and the merge after them; a part
#    that fails (its output path blocked) cancels the merge, `batch status` says which part failed,
#    and `--resubmit` runs only that part and the merge again. The merged SR stack equals the one
#    a single `moire reconstruct` writes, bit for bit.
if [ "$(id -u)" = 0 ] && command -v slurmctld > /dev/null && command -v munged > /dev/null; then
  SLURMDIR="$WORK/slurm"
  if out=$(bash tests/slurm-cluster.sh start "$SLURMDIR" 2>&1); then
    export SLURM_CONF="$SLURMDIR/slurm.conf"
    sed -e "s|count: [0-9]*|count: 7|" -e "s|roi: \[512, 512\]|roi: [128, 128]|" "$WORK/tirf.yaml" > "$WORK/batch.yaml"
    B="$WORK/batch"; mkdir -p "$B"
    "$MOIRE" run "$WORK/batch.yaml" --embedded --clock virtual --no-publish --out "$B/raw.ome.tif" --quiet > "$B/run.log" 2>&1
    "$MOIRE" reconstruct "$B/raw.ome.tif" --out "$B/single.ome.tif" > "$B/single.log" 2>&1
    mkdir "$B/merged.part-2-of-3.ome.tif"                     # part 2 cannot be written: it fails
    "$MOIRE" batch submit "$B/raw.ome.tif" --out "$B/merged.ome.tif" --parts 3 --retries 1 > "$B/submit.log" 2>&1; src=$?
    "$MOIRE" batch status "$B/merged.ome.tif" --wait 600 > "$B/status1.log" 2>&1; first=$?
    rmdir "$B/merged.part-2-of-3.ome.tif"
    "$MOIRE" batch status "$B/merged.ome.tif" --wait 600 --resubmit > "$B/status2.log" 2>&1; second=$?
    if [ $src -eq 0 ] && [ $first -ne 0 ] && grep -q "parts 2 missing" "$B/status1.log" && [ $second -eq 0 ] \
       && grep -q "resubmitted parts 2 as array job" "$B/status2.log" && python3 - "$B" <<'PY'
import sys, tifffile, numpy as np
single = tifffile.imread(f"{sys.argv[1]}/single.ome.tif")
merged = tifffile.imread(f"{sys.argv[1]}/merged.ome.tif")
assert single.shape == merged.shape == (7, 256, 256) and np.array_equal(single, merged), (single.shape, merged.shape)
PY
    then ok "Slurm batch: 3 array tasks + dependent merge ($(head -1 "$B/submit.log" | cut -c1-70)); a failed part named, resubmitted alone; merged SR stack equals the single-process one bit for bit"
    else bad "Slurm batch: submit=$src first=$first second=$second; $(tail -2 "$B/status1.log") | $(tail -2 "$B/status2.log") | $(cat "$B"/merged.batch/*.log 2>/dev/null | tail -3)"; fi
    # Denoising as a Slurm array (`--tool denoise`): every frame once in the merged stack; part 1
    # is the single run's start, later parts (after their warm-up) near the single run's frames.
    "$MOIRE" denoise "$B/raw.ome.tif" --out "$B/den-single.ome.tif" --first-steps 10 --adapt-steps 1 > "$B/den-single.log" 2>&1
    "$MOIRE" batch submit "$B/raw.ome.tif" --out "$B/den.ome.tif" --parts 3 --tool denoise -- --first-steps 10 --adapt-steps 1 \
      > "$B/den-submit.log" 2>&1; dsrc=$?
    "$MOIRE" batch status "$B/den.ome.tif" --wait 600 > "$B/den-status.log" 2>&1; dst=$?
    if [ $dsrc -eq 0 ] && [ $dst -eq 0 ] && python3 - "$B" <<'PY'
import sys, tifffile, numpy as np
single = tifffile.imread(f"{sys.argv[1]}/den-single.ome.tif").astype(float)
merged = tifffile.imread(f"{sys.argv[1]}/den.ome.tif").astype(float)
raw = tifffile.imread(f"{sys.argv[1]}/raw.ome.tif").astype(float).reshape(single.shape)
assert merged.shape == single.shape == (63, 128, 128), (merged.shape, single.shape)
rms = lambda a, b: float(np.sqrt(((a - b) ** 2).mean()))
assert all(rms(merged[t], single[t]) < 1e-3 * rms(raw[t], single[t]) for t in range(21)), "part 1 differs from the single run"
worst = max(rms(merged[t], single[t]) / rms(raw[t], single[t]) for t in range(21, 63))
assert worst < 0.5, worst
PY
    then ok "Slurm batch denoise: 3 array tasks (--tool denoise) + merge; 63 frames once; part 1 equals the single run, later parts near it"
    else bad "Slurm batch denoise: submit=$dsrc status=$dst $(tail -2 "$B/den-status.log") | $(cat "$B"/den.batch/*.log 2>/dev/null | tail -3)"; fi
    # Workers launched by Slurm: the repo's job script starts two `moire worker` tasks against a live run's broker.
    sed -e "s|count: [0-9]*|count: 20|" -e "s|roi: \[512, 512\]|roi: [128, 128]|" "$WORK/tirf.yaml" > "$B/live.yaml"
    printf 'reconstruction: {workers: 2, work_endpoint: "ipc://%s/slurm-work.sock"}\n' "$B" >> "$B/live.yaml"
    wjob=$(MOIRE="$MOIRE" sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$B/workers.log" \
      packaging/moire-worker.sbatch "ipc://$B/slurm-work.sock" 2> "$B/sbatch-workers.err")
    "$MOIRE" run "$B/live.yaml" --embedded --clock virtual --no-publish --out "$B/live.ome.tif" > "$B/live.log" 2>&1; lrc=$?
    [ -n "$wjob" ] && scancel "$wjob"
    if [ $lrc -eq 0 ] && grep "SIM workers:" "$B/live.log" | grep -q "task0" && grep "SIM workers:" "$B/live.log" | grep -q "task1"; then
      ok "Slurm-launched workers (packaging/moire-worker.sbatch, 2 tasks) reconstructed the live run's sets ($(grep 'SIM workers' "$B/live.log"))"
    else bad "Slurm workers: job=$wjob rc=$lrc $(cat "$B/sbatch-workers.err") $(tail -2 "$B/live.log") $(tail -3 "$B/workers.log" 2>/dev/null)"; fi
    bash tests/slurm-cluster.sh stop "$SLURMDIR"; SLURMDIR=; unset SLURM_CONF
  else
    bad "the one-node Slurm cluster did not start: $out"
  fi
else
  bad "Slurm batch test needs root and Debian's slurmctld, slurmd, slurm-client and munge (make deps installs them)"
fi

# 8. Live SIM on `moire worker` processes: two workers on an ipc endpoint, sets and results in the
#    memory each shares with the broker; one freezes (SIGSTOP) after its second set, as a hung node
#    would, and is then killed (-9). Every phase set is still reconstructed exactly once, in order,
#    and the SR stack equals the one made in process.
sed -e "s|count: [0-9]*|count: 60|" -e "s|roi: \[512, 512\]|roi: [128, 128]|" "$WORK/tirf.yaml" > "$WORK/wlocal.yaml"
cp "$WORK/wlocal.yaml" "$WORK/wshared.yaml"
printf 'reconstruction: {record: true}\n' >> "$WORK/wlocal.yaml"
printf 'reconstruction: {record: true, workers: 2, work_endpoint: "ipc://%s/work.sock"}\n' "$WORK" >> "$WORK/wshared.yaml"
"$MOIRE" run "$WORK/wlocal.yaml" --embedded --clock virtual --no-publish --out "$WORK/wl.ome.tif" --quiet > "$WORK/wl.log" 2>&1
"$MOIRE" worker --connect "ipc://$WORK/work.sock" --name steady > "$WORK/worker-a.log" 2>&1 &
WA=$!
"$MOIRE" worker --connect "ipc://$WORK/work.sock" --name frozen --progress > "$WORK/worker-b.log" 2>&1 &
WB=$!
"$MOIRE" run "$WORK/wshared.yaml" --embedded --clock virtual --no-publish --out "$WORK/ws.ome.tif" > "$WORK/ws.log" 2>&1 &
RUNPID=$!
twice() { [ "$(grep -c reconstructed "$WORK/worker-b.log")" -ge 2 ]; }
froze=no
await twice && kill -STOP $WB && froze=yes
wait $RUNPID; wrc=$?
kill -9 $WB 2> /dev/null; wait $WB 2> /dev/null
signal_and_wait INT $WA; warc=$?
if [ $wrc -eq 0 ] && [ $froze = yes ] && [ $warc -eq 0 ] && grep -q "set(s) reconstructed" "$WORK/worker-a.log" && grep -q "SIM workers: " "$WORK/ws.log" && grep -q "sets handed over in shared memory" "$WORK/ws.log" && python3 - "$WORK" <<'PY'
import sys, tifffile, numpy as np, xml.etree.ElementTree as ET
w = sys.argv[1]
local, shared = (tifffile.imread(f"{w}/{name}.sr.ome.tif") for name in ("wl", "ws"))
assert local.shape == shared.shape == (60, 256, 256), (local.shape, shared.shape)
assert np.array_equal(local, shared)
with tifffile.TiffFile(f"{w}/ws.sr.ome.tif") as t:
    m = {e.get("K"): e.text for e in ET.fromstring(t.ome_metadata).iter("{http://www.openmicroscopy.org/Schemas/OME/2016-06}M")}
ts = [int(dict(kv.split("=", 1) for kv in m[f"plane{i}"].split())["t"]) for i in range(60)]
assert ts == list(range(60)), ts
PY
then ok "moire worker ×2 over ipc (sets and results in shared memory), one frozen then killed mid-run: 60 sets each reconstructed once, in order, equal to in-process; the other stopped by SIGINT ($(grep 'SIM workers' "$WORK/ws.log" | paste -sd ';'))"
else bad "workers: rc=$wrc froze=$froze steady worker's exit on SIGINT=$warc $(tail -3 "$WORK/ws.log") | $(tail -2 "$WORK/worker-a.log") | $(tail -2 "$WORK/worker-b.log")"; fi

# 8b. Light-sheet stacks on a `moire worker` process: the same lattice run in process and with
#     `reconstruction: {workers: 1}` over ipc; the worker deskews and deconvolves every stack, and
#     the recorded volumes are equal.
sed -e "s|count: 1|count: 2|" -e "s|recording: .*|recording: $WORK/lsl.ome.tif|" "$WORK/lattice.yaml" > "$WORK/lslocal.yaml"
sed -e "s|recording: .*|recording: $WORK/lss.ome.tif|" "$WORK/lslocal.yaml" > "$WORK/lsshared.yaml"
printf 'reconstruction: {workers: 1, work_endpoint: "ipc://%s/lswork.sock"}\n' "$WORK" >> "$WORK/lsshared.yaml"
"$MOIRE" run "$WORK/lslocal.yaml" --embedded --clock virtual --no-publish --quiet > "$WORK/lsl.log" 2>&1; lslrc=$?
"$MOIRE" worker --connect "ipc://$WORK/lswork.sock" --name sheet > "$WORK/worker-ls.log" 2>&1 &
WLS=$!
"$MOIRE" run "$WORK/lsshared.yaml" --embedded --clock virtual --no-publish > "$WORK/lss.log" 2>&1; lssrc=$?
signal_and_wait INT $WLS
if [ $lslrc -eq 0 ] && [ $lssrc -eq 0 ] && grep -q "light-sheet workers: sheet 2 stacks" "$WORK/lss.log" && python3 - "$WORK" <<'PY'
import sys, tifffile, numpy as np
w = sys.argv[1]
local, shared = (tifffile.imread(f"{w}/{name}.vol.ome.tif") for name in ("lsl", "lss"))
assert local.shape == shared.shape and local.ndim >= 4 and local.shape[0] == 2, (local.shape, shared.shape)
assert np.array_equal(local, shared)
PY
then ok "light-sheet stacks on a moire worker process: 2 volumes deskewed and deconvolved there, equal to in process ($(grep 'light-sheet workers' "$WORK/lss.log"))"
else bad "light-sheet worker: rc=$lslrc/$lssrc $(tail -3 "$WORK/lss.log") | $(tail -2 "$WORK/worker-ls.log")"; fi

# 9. useq-schema (pymmcore-plus's acquisition schema): a sequence written by the PyPI useq-schema
#    package drives a run (time points, channel, exposure, z stack), the recording's planes sit at
#    useq's z positions, and `moire validate --to-useq` writes a sequence useq-schema reads back
#    with the same sizes, positions and exposures.
python3 - "$WORK" > "$WORK/useq.log" 2>&1 <<'PY'
import sys, useq
seq = useq.MDASequence(time_plan={"interval": 0.05, "loops": 3}, z_plan={"range": 1.0, "step": 0.5},
                       channels=[{"config": "gfp", "exposure": 4}], axis_order="tpcz")
open(f"{sys.argv[1]}/useq-seq.yaml", "w").write(seq.yaml())
PY
cat > "$WORK/useq.yaml" <<YAML
moire: 1
name: driven by a useq sequence
rig: $PWD/sim-hardware/rigs/multisim.yaml
mode: sim2d
camera: {roi: [64, 64]}
channels:
  - {name: gfp, laser: l488, power_mw: 20, exposure_ms: 5, emission_nm: 525, pattern_set: sim488}
  - {name: mcherry, laser: l560, power_mw: 20, exposure_ms: 5, emission_nm: 610, pattern_set: sim560}
sim: {angles: 3, phases: 3}
sequence: useq-seq.yaml
reconstruction: {enabled: false}
YAML
"$MOIRE" run "$WORK/useq.yaml" --embedded --clock virtual --no-publish --out "$WORK/useq.ome.tif" --quiet >> "$WORK/useq.log" 2>&1; urc=$?
"$MOIRE" validate "$WORK/useq.yaml" --to-useq "$WORK/useq-back.yaml" >> "$WORK/useq.log" 2>&1; vrc=$?
if [ $urc -eq 0 ] && [ $vrc -eq 0 ] && python3 - "$WORK" >> "$WORK/useq.log" 2>&1 <<'PY'
import sys, yaml, useq, tifffile, xml.etree.ElementTree as ET
w = sys.argv[1]
given = useq.MDASequence(**yaml.safe_load(open(f"{w}/useq-seq.yaml")))
back = useq.MDASequence(**yaml.safe_load(open(f"{w}/useq-back.yaml")))
assert {k: v for k, v in back.sizes.items() if v} == {"t": 3, "c": 1, "z": 3}, back.sizes
assert [c.config for c in back.channels] == ["gfp"] and back.channels[0].exposure == 4.0
assert back.time_plan.loops == 3 and abs(back.time_plan.interval.total_seconds() - 0.05) < 1e-9
ns = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"
with tifffile.TiffFile(f"{w}/useq.ome.tif") as t:
    planes = ET.fromstring(t.ome_metadata).findall(f".//{ns}Plane")
assert len(planes) == 3 * 3 * 9, len(planes)                  # t × z × (3 angles × 3 phases), one channel
recorded = sorted({round(float(p.get("PositionZ")), 6) for p in planes})
home = 50.0                                                     # the simulated stage's home: useq's range is centred there
assert recorded == [round(home + z, 6) for z in given.z_plan] == list(back.z_plan), (recorded, list(given.z_plan), list(back.z_plan))
assert all(float(p.get("ExposureTime")) == 4.0 for p in planes)
print("useq ok", back.sizes)
PY
then ok "useq-schema: a sequence from the PyPI package drove the run (3 t × 1 c × 3 z × 9 patterns at useq's z positions, its exposure); --to-useq reads back in useq-schema with the same sizes, positions and exposure"
else bad "useq: run=$urc validate=$vrc $(tail -5 "$WORK/useq.log")"; fi

# 10. OME-Zarr: the same 2D-SIM run (virtual time, same seed) recorded to OME-Zarr instead of
#     OME-TIFF: zarr-python reads raw planes equal to the TIFF's bit for bit (angles and phases on
#     the channel axis), the SR store equals the TIFF's SR stack, and ome-zarr-py finds both images
#     with their pyramids and physical scale.
sed -e "s|count: [0-9]*|count: 3|" -e "s|roi: \[512, 512\]|roi: [128, 128]|" "$WORK/tirf.yaml" > "$WORK/zarr.yaml"
printf 'reconstruction: {record: true}\n' >> "$WORK/zarr.yaml"
"$MOIRE" run "$WORK/zarr.yaml" --embedded --clock virtual --no-publish --out "$WORK/zt.ome.tif" --quiet > "$WORK/zarr.log" 2>&1; trc=$?
"$MOIRE" run "$WORK/zarr.yaml" --embedded --clock virtual --no-publish --out "$WORK/zz.ome.zarr" --quiet >> "$WORK/zarr.log" 2>&1; zrc=$?
"$MOIRE" inspect "$WORK/zz.ome.zarr" > "$WORK/zarr-inspect.log" 2>&1; irc=$?
if [ $trc -eq 0 ] && [ $zrc -eq 0 ] && [ $irc -eq 0 ] && grep -q "planes: 27 written, 27 acquired, 0 missing" "$WORK/zarr-inspect.log" \
   && grep -q "store: closed cleanly" "$WORK/zarr-inspect.log" && python3 - "$WORK" >> "$WORK/zarr.log" 2>&1 <<'PY'
import sys, warnings, numpy as np, tifffile, zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
warnings.filterwarnings("error", message=".*not recognized as a component")
w = sys.argv[1]
raw_tiff = tifffile.imread(f"{w}/zt.ome.tif").reshape(3, 9, 128, 128)
raw = zarr.open_group(f"{w}/zz.ome.zarr", mode="r")["0"]
assert raw.shape == (3, 9, 1, 128, 128), raw.shape
assert np.array_equal(raw[:, :, 0], raw_tiff)
sr_tiff = tifffile.imread(f"{w}/zt.sr.ome.tif").reshape(3, 256, 256)
sr = zarr.open_group(f"{w}/zz.sr.ome.zarr", mode="r")["0"]
assert sr.shape == (3, 1, 1, 256, 256) and sr.dtype == np.float32, (sr.shape, sr.dtype)
assert np.array_equal(sr[:, 0, 0], sr_tiff)
for store, levels, pixel in (("zz.ome.zarr", 2, 0.065), ("zz.sr.ome.zarr", 3, 0.0325)):
    image = next(iter(Reader(parse_url(f"{w}/{store}"))()))
    assert len(image.data) == levels, (store, len(image.data))
    scale = image.metadata["coordinateTransformations"][0][0]["scale"]
    assert abs(scale[-1] - pixel) < 1e-6, (store, scale)
print("zarr ok")
PY
then ok "OME-Zarr: the run recorded to .ome.zarr reads back in zarr-python equal to the OME-TIFF run bit for bit (raw and SR), ome-zarr-py finds both multiscale images with their scale, moire inspect reads the store"
else bad "OME-Zarr: tiff run=$trc zarr run=$zrc inspect=$irc $(tail -3 "$WORK/zarr-inspect.log") $(tail -5 "$WORK/zarr.log")"; fi
# The offline tools read the store as they read the OME-TIFF: moire reconstruct gives the same SR
# frames bit for bit, and moire replay of the store re-records the same raw planes.
"$MOIRE" reconstruct "$WORK/zz.ome.zarr" --out "$WORK/zz-offline.sr.ome.tif" > "$WORK/zarr-tools.log" 2>&1; zrrc=$?
"$MOIRE" reconstruct "$WORK/zt.ome.tif" --out "$WORK/zt-offline.sr.ome.tif" >> "$WORK/zarr-tools.log" 2>&1; trrc=$?
"$MOIRE" replay "$WORK/zz.ome.zarr" --out "$WORK/zz-replay.ome.tif" --quiet >> "$WORK/zarr-tools.log" 2>&1; zprc=$?
if [ $zrrc -eq 0 ] && [ $trrc -eq 0 ] && [ $zprc -eq 0 ] && python3 - "$WORK" >> "$WORK/zarr-tools.log" 2>&1 <<'PY'
import sys, numpy as np, tifffile
w = sys.argv[1]
from_store = tifffile.imread(f"{w}/zz-offline.sr.ome.tif")
from_tiff = tifffile.imread(f"{w}/zt-offline.sr.ome.tif")
assert from_store.shape == (3, 256, 256) and np.array_equal(from_store, from_tiff), from_store.shape
replayed = tifffile.imread(f"{w}/zz-replay.ome.tif").reshape(3, 9, 128, 128)
assert np.array_equal(replayed, tifffile.imread(f"{w}/zt.ome.tif").reshape(3, 9, 128, 128))
PY
then ok "OME-Zarr read back by Moiré: moire reconstruct of the store equals that of the OME-TIFF bit for bit; moire replay of the store re-records its 27 raw planes"
else bad "OME-Zarr read back by Moiré: reconstruct=$zrrc/$trrc replay=$zprc $(tail -5 "$WORK/zarr-tools.log")"; fi
# 10c. kill -9 of a run recording to OME-Zarr: every plane the plane log names reads back in
#      zarr-python (decoding every chunk present: a partial chunk would fail), acquired planes are
#      not the fill value, and moire inspect says the store was interrupted.
sed -e "s|count: [0-9]*|count: 400|" -e "s|roi: \[512, 512\]|roi: [256, 256]|" "$WORK/tirf.yaml" > "$WORK/zkill.yaml"
"$MOIRE" run "$WORK/zkill.yaml" --embedded --no-publish --out "$WORK/zk.ome.zarr" --quiet > "$WORK/zkill.log" 2>&1 &
KPID=$!
await bash -c "[ \$(cat '$WORK/zk.ome.zarr.moire-planes.jsonl' 2> /dev/null | wc -l) -ge 40 ]"
kill -9 "$KPID"; wait "$KPID" 2> /dev/null
"$MOIRE" inspect "$WORK/zk.ome.zarr" > "$WORK/zk-inspect.log" 2>&1; kirc=$?
if [ $kirc -eq 0 ] && grep -q "NOT closed (interrupted)" "$WORK/zk-inspect.log" \
   && out=$(python3 - "$WORK/zk.ome.zarr" 2>&1 <<'PY'
import json, os, sys, zarr
store = sys.argv[1]
records = []
for line in open(f"{store}.moire-planes.jsonl").read().split("\n"):
    try:
        records.append(json.loads(line)["header"])
    except ValueError:
        pass  # a torn last line: the kill came while it was appended
raw = zarr.open_group(store, mode="r")["0"]
data = raw[:]  # decodes every chunk present
per_timepoint = raw.shape[1]
for header in records:
    if not header.get("missing"):
        t, c = divmod(header["index"], per_timepoint)
        assert data[t, c, 0].min() > 0, f"plane {header['index']} logged but not in the store"
temporary = [f for _, _, files in os.walk(store) for f in files if ".writing" in f]
assert len(records) >= 40, len(records)
print(f"{len(records)} planes logged and read back, {len(temporary)} temporary file(s) left beside the chunks")
PY
); then ok "kill -9 while recording to OME-Zarr: $out; moire inspect reads the interrupted store"
else bad "OME-Zarr kill: inspect=$kirc $(tail -3 "$WORK/zk-inspect.log") $out"; fi

echo "integration: $pass passed, $fail failed"
[ $fail -eq 0 ]
