# citywatch — two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, start broker (embedded if none answers) + API + detector
#   make test   create .venv, install, run the test suite
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed
# torch is pinned to the wheels this machine class carries; see README "Installing"
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# The suite spends most of its time waiting (outages of 30-60 s, the fuzzer's time cap), so it runs in
# parallel workers; a module's tests stay on one worker (module-scoped fixtures are built once).
PYTEST_WORKERS ?= 4
SCENARIO_CLIPS = $(patsubst %.yaml,%.mp4,$(wildcard training/synth/scenarios/*.yaml))

.PHONY: install demo test lint fmt scenarios dataset train clean test-services test-services-rtsp test-services-labelstudio test-services-browser screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install $(SCENARIO_CLIPS)
	$(BIN)/citywatch demo --config streams.yaml

# The suite needs an MQTT broker: it uses the one on 127.0.0.1:1883 or starts `mosquitto`
# on a free port; the broker-ACL tests always start their own mosquitto (with mosquitto_passwd).
# Install it here when the machine lacks it (Debian/Ubuntu, as root).
test-services:
	@(command -v mosquitto || test -x /usr/sbin/mosquitto) >/dev/null 2>&1 || \
	 (command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq mosquitto >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq mosquitto))) || \
	 echo "warning: no mosquitto installed; the MQTT tests will say how to fix it"

# The RTSP tests serve clips with GStreamer's RTSP server through the system Python (python3-gi);
# without it they skip and say so.
RTSP_PKGS = gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi
test-services: test-services-rtsp
test-services-rtsp:
	@/usr/bin/python3 tests/rtsp_server.py --check >/dev/null 2>&1 || \
	 (command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PKGS) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PKGS) >/dev/null 2>&1))) || \
	 echo "warning: no GStreamer RTSP server ($(RTSP_PKGS)); the RTSP tests will skip"

# The browser tests (tests/browser) drive the console in Debian's Chromium through Playwright for Python
# (the dev extra's `playwright`; no `playwright install` download): about 115 MB of packages, 370 MB on
# disk, and a small Chinese font (5 MB) so the screenshots show 中文 rather than boxes. Without Chromium
# they skip and say so.
BROWSER_PKGS = chromium fonts-wqy-microhei
test-services: test-services-browser
test-services-browser:
	@( (test -x /usr/bin/chromium || command -v chromium) && fc-list :lang=zh family | grep -q . ) >/dev/null 2>&1 || \
	 (command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS) >/dev/null 2>&1))) || \
	 echo "warning: no Chromium or Chinese font ($(BROWSER_PKGS)); the browser tests will skip without Chromium"

# The README's console screenshots (docs/screenshots/<page>-<w>x<h>.png), taken by the browser tests.
screenshots: install test-services-browser $(SCENARIO_CLIPS)
	CITYWATCH_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/browser

# The Label Studio round trip (tests/integration/test_labelstudio.py) runs a real Label Studio from its own
# virtualenv: it pins Django and much else that would clash with ours (about 1 GB, a minute from PyPI).
# The stamp holds the pinned version, so a new pin reinstalls; the migrated template database makes each
# start take seconds instead of ~20 s. Without it that test skips and says so.
LABELSTUDIO       ?= label-studio==1.23.2
LABELSTUDIO_VENV  ?= .venv-labelstudio
LABELSTUDIO_STAMP  = $(LABELSTUDIO_VENV)/.installed
test-services: test-services-labelstudio
test-services-labelstudio:
	@grep -qxF '$(LABELSTUDIO)' $(LABELSTUDIO_STAMP) 2>/dev/null || \
	 (echo "installing $(LABELSTUDIO) into $(LABELSTUDIO_VENV) (about 1 GB)" && \
	  (test -x $(LABELSTUDIO_VENV)/bin/python || $(PY) -m venv $(LABELSTUDIO_VENV)) && \
	  $(LABELSTUDIO_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	  $(LABELSTUDIO_VENV)/bin/python -m pip install --quiet '$(LABELSTUDIO)' && \
	  rm -rf $(LABELSTUDIO_VENV)/citywatch-template && \
	  CITYWATCH_LABELSTUDIO_VENV=$(LABELSTUDIO_VENV) $(LABELSTUDIO_VENV)/bin/python tests/labelstudio.py --prepare && \
	  echo '$(LABELSTUDIO)' > $(LABELSTUDIO_STAMP)) || \
	 echo "warning: could not install $(LABELSTUDIO) into $(LABELSTUDIO_VENV); the Label Studio test will skip"

# Then the end-to-end test once more against a mosquitto with the shipped ACL and a login per role
# (deploy/mosquitto/acl): the product works behind the broker a bureau must run.
test: install test-services $(SCENARIO_CLIPS)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)
	CITYWATCH_TEST_BROKER=acl $(BIN)/python -m pytest -q tests/e2e/test_end_to_end.py

lint: install
	$(BIN)/ruff check detector api training tests bench
	$(BIN)/ruff format --check detector api training tests bench
	$(BIN)/mypy detector api training bench
	$(BIN)/lint-imports  # the import rules in pyproject.toml [tool.importlinter] (README "Layout")

fmt: install
	$(BIN)/ruff format detector api training tests bench
	$(BIN)/ruff check --fix detector api training tests bench

# Re-render the bundled scenario clips from their scripts (deterministic).
scenarios: $(SCENARIO_CLIPS)

# The bundled scenario clips (the demo's cameras, the tests' ground truth) are built, not kept in
# git: rendering is deterministic, the same script gives the same bytes.
training/synth/scenarios/%.mp4: training/synth/scenarios/%.yaml | $(STAMP)
	$(BIN)/citywatch synth scenario $< --out training/synth/scenarios

# The synthetic dataset the default model is trained on (seeds disjoint per split).
dataset: install
	$(BIN)/citywatch synth dataset --out datasets/synth-v2 --workers $$(nproc)

clean:
	rm -rf var runs .pytest_cache .mypy_cache .ruff_cache
