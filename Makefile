# Moiré — build, demo, test, bench.  `make demo` and `make test` do all set-up on a fresh Debian.
SHELL := /bin/bash
SWIFT ?= swift
# The C libraries behind the system-library modules, (for the batch tests) a one-node Slurm cluster,
# and (for the napari live view's test) an X server without a screen with Mesa's software OpenGL.
DEB_PKGS := libzmq3-dev libfftw3-dev libtiff-dev libusb-1.0-0-dev libdnnl-dev zlib1g-dev libsodium-dev libzstd-dev libxml2 pkg-config \
  slurmctld slurmd slurm-client munge xvfb xauth libgl1-mesa-dri
PY_PKGS := pyzmq tifffile numpy ome-types xmlschema lxml prometheus-client useq-schema pyyaml zarr ome-zarr napari napari-ome-zarr pyqt5
DEMO_OUT ?= demo-output/tirf-sim.ome.tif
BUILD_FLAGS ?= -c release

.PHONY: deps deps-deb deps-py build build-debug demo lint test test-stress test-run bench bench-fidelity fuzz clean install man

deps: deps-deb deps-py

deps-deb:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; \
	else echo "deps: Debian packages present"; fi

deps-py:
	@if python3 -c "import zmq, tifffile, numpy, ome_types, xmlschema, lxml, prometheus_client, useq, yaml, zarr, ome_zarr, napari_ome_zarr, PyQt5" 2>/dev/null; then echo "deps: Python packages present"; else \
	  echo "deps: installing Python packages: $(PY_PKGS)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  command -v python3 >/dev/null || { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3 python3-pip >/dev/null; }; \
	  python3 -m pip --version >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-pip >/dev/null; \
	  python3 -m pip install -q $(PY_PKGS) 2>/dev/null || python3 -m pip install -q --break-system-packages $(PY_PKGS) \
	    || { DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-zmq python3-numpy python3-tifffile >/dev/null; }; \
	  python3 -c "import zmq, tifffile, numpy, ome_types, xmlschema, lxml, prometheus_client, useq, yaml, zarr, ome_zarr, napari_ome_zarr, PyQt5" || { echo "deps: could not install $(PY_PKGS)"; exit 1; }; \
	fi

build: deps-deb
	$(SWIFT) build $(BUILD_FLAGS) --product moire
	$(SWIFT) build $(BUILD_FLAGS) --product moired

# The main job: a 2D-SIM acquisition (3 × 3 patterns, 20 time points, 512×512) on the simulated
# rig, recorded to OME-TIFF and published on tcp://127.0.0.1:5560, then inspected and read back
# with tifffile.
demo: deps build
	@mkdir -p $(dir $(DEMO_OUT))
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire run sim-hardware/protocols/tirf-sim.yaml --out $(DEMO_OUT) --overwrite
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire inspect $(DEMO_OUT)
	python3 examples/python/check_recording.py $(DEMO_OUT)

# The tests are built optimized (debug configuration, so @testable imports work, plus -O): they
# run the code as it ships, where object lifetimes end at their last use (a ZeroMQ message
# released before its bytes were read passed every debug test and broke CURVE in release), and
# the numerical tests take a quarter of the time they take unoptimized.
TEST_BUILD_FLAGS ?= -Xswiftc -O

# Unit and component tests (Swift Testing), then the end-to-end checks through the executables.
test: deps lint
	$(SWIFT) build --build-tests $(TEST_BUILD_FLAGS)
	$(SWIFT) test --skip-build --parallel --num-workers 2
	BIN=$$($(SWIFT) build --show-bin-path) bash tests/integration.sh

# Fuzzing: 100 000 structure-aware inputs per reader (protocol, rig, control requests, OME-TIFF,
# recording index + recovery, MRC, PNG); make test runs the same campaigns with fewer inputs.
fuzz: deps
	$(SWIFT) build --build-tests $(TEST_BUILD_FLAGS)
	MOIRE_FUZZ_INPUTS=$${MOIRE_FUZZ_INPUTS:-100000} $(SWIFT) test --skip-build --filter 'FuzzTests' 2>&1 | grep -E 'inputs|passed|failed|error'

# Installs the binaries, shell completions and man pages (both generated from the argument
# parser), the systemd unit and its options file (kept if present), and the docs, under PREFIX.
PREFIX ?= /usr/local
DESTDIR ?=
install: build man
	@BIN=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path); set -e; \
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/doc/moire \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/default; \
	for tool in moire moired; do \
	  install -m 755 $$BIN/$$tool $(DESTDIR)$(PREFIX)/bin/$$tool; \
	  $$BIN/$$tool --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$tool; \
	  $$BIN/$$tool --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$tool; \
	  $$BIN/$$tool --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$tool.fish; \
	done; \
	install -m 644 .build/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/; \
	install -m 644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/moire/; \
	install -m 644 packaging/moired.service $(DESTDIR)/etc/systemd/system/moired.service; \
	test -e $(DESTDIR)/etc/default/moired || install -m 644 packaging/moired.default $(DESTDIR)/etc/default/moired; \
	echo "installed under $(DESTDIR)$(PREFIX); systemd: useradd --system moire; systemctl daemon-reload; systemctl enable --now moired"

# Man pages for moire and moired, generated by swift-argument-parser's GenerateManual plugin.
man:
	@mkdir -p .build/man
	$(SWIFT) package --allow-writing-to-directory .build/man generate-manual --multi-page --output-directory .build/man \
	  --authors "The Moiré developers" --section 1

# House style (.swift-format: 4-space indents, 120 columns, one declaration per line) over Sources/.
lint:
	$(SWIFT) format lint --strict --recursive Sources

# The same suite while two busy loops keep both cores loaded: a test that needs an idle machine fails here.
test-stress: deps
	$(SWIFT) build --build-tests $(TEST_BUILD_FLAGS)
	@bash tests/with-load.sh 2 $(MAKE) --no-print-directory test-run

# The suite without the set-up (for test-stress).
test-run:
	$(SWIFT) test --skip-build --parallel --num-workers 2
	BIN=$$($(SWIFT) build --show-bin-path) bash tests/integration.sh

# Benchmarks (release build). The sim2d peer is napari-sim-processor's ConvSimProcessor (no napari, no Qt).
bench: deps build
	@python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib || python3 -m pip install -q --break-system-packages matplotlib
	@python3 -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('napari_sim_processor') else 1)" \
	  || python3 -m pip install -q --no-deps napari-sim-processor || python3 -m pip install -q --no-deps --break-system-packages napari-sim-processor
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire bench transport
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire wisdom sim-hardware/protocols/tirf-sim.yaml
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire bench sim2d
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire bench live-sim
	@test -x Benchmarks/.venv/bin/python3 || python3 -m venv Benchmarks/.venv
	@Benchmarks/.venv/bin/python3 -c "import torch, numpy" 2>/dev/null || { echo "bench: installing torch from PyPI into Benchmarks/.venv (large, once)"; \
	  Benchmarks/.venv/bin/python3 -m pip install -q torch numpy; }
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire bench denoise
	@python3 -c "import skimage" 2>/dev/null || python3 -m pip install -q scikit-image || python3 -m pip install -q --break-system-packages scikit-image
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire bench llsm
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire bench usb

# 2D-SIM fidelity against ground truth (Benchmarks/fidelity): Moiré beside the known-parameter Wiener
# ceiling, napari-sim-processor and widefield on 16 simulated scenes; 3D-SIM beside a known-parameter 3D
# Wiener ceiling and widefield on 12 simulated z-stacks; LLS-SIM (one orientation) on 12 planes; then denoising fidelity: Moiré
# beside a tuned Gaussian, BM3D and frame averages on 18 simulated time-lapses; tables, JSON and PNG plots.
# The 2D-SIM harness also replays 30-set time-lapses of its ≤ 100-photon scenes through the live
# pipeline (live SIM and denoising); FIDELITY_ARGS= leaves that out, FIDELITY_ARGS=--denoise adds
# moire reconstruct --denoise (slow: minutes per scene).
FIDELITY_ARGS ?= --live 30
bench-fidelity: deps build
	@python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib || python3 -m pip install -q --break-system-packages matplotlib
	@python3 -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('napari_sim_processor') else 1)" \
	  || python3 -m pip install -q --no-deps napari-sim-processor || python3 -m pip install -q --no-deps --break-system-packages napari-sim-processor
	python3 Benchmarks/fidelity/fidelity.py --moire $$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire --out Benchmarks/fidelity/results $(FIDELITY_ARGS)
	python3 Benchmarks/fidelity/sim3d_fidelity.py --moire $$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire --out Benchmarks/fidelity/results
	python3 Benchmarks/fidelity/llssim_fidelity.py --moire $$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire --out Benchmarks/fidelity/results
	@python3 -c "import bm3d" 2>/dev/null || python3 -m pip install -q bm3d || python3 -m pip install -q --break-system-packages bm3d
	python3 Benchmarks/fidelity/denoise_fidelity.py --moire $$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire --out Benchmarks/fidelity/results $(DENOISE_FIDELITY_ARGS)
	@python3 -c "import PIL" 2>/dev/null || python3 -m pip install -q pillow || python3 -m pip install -q --break-system-packages pillow
	python3 Benchmarks/fidelity/real_denoise.py --moire $$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/moire --out Benchmarks/fidelity/results

clean:
	rm -rf .build demo-output
