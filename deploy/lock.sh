#!/bin/sh
# Regenerates the image's lock files from pyproject.toml, with the sha256 of every file:
#   deploy/requirements.lock          [project.dependencies] + the build backend ([build-system])
#   deploy/requirements-sandbox.lock  the same + the `sandbox` extra (docker build --build-arg EXTRAS=sandbox)
# The Dockerfile installs them with `pip install --require-hashes --no-deps`: nothing is
# resolved at build time, and a file whose hash differs is refused.
#
#   sh deploy/lock.sh             # from the repo root: add/drop what pyproject.toml changed, keep other pins
#   sh deploy/lock.sh --upgrade   # re-resolve everything to the newest allowed releases
#
# The tool is pip-compile (pip-tools 7.7.0, on pip 26.3) in a scratch venv under /tmp. It
# resolves for the interpreter that runs it, so run it with CPython 3.11 on Linux x86_64 (the
# image's platform). PyPI only: pip's own configuration files and PIP_* variables (local
# indexes, find-links, constraints) are ignored.
set -eu

cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
"$python" -c 'import platform, sys; assert sys.version_info[:2] == (3, 11) and sys.platform == "linux" \
    and platform.machine() == "x86_64", "run with CPython 3.11 on Linux x86_64 (PYTHON=...)"'

for var in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1

scratch=$(mktemp -d /tmp/ingest-fleet-lock.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet --index-url https://pypi.org/simple pip==26.3 pip-tools==7.7.0

# Every image runs the fleet (the `fleet` extra); the sandbox image adds the emulators.
for extra in "" sandbox; do
    # The header of each lock names this script (pip-compile's CUSTOM_COMPILE_COMMAND).
    CUSTOM_COMPILE_COMMAND="sh deploy/lock.sh  (pip-tools 7.7.0: pip-compile --generate-hashes --allow-unsafe --build-deps-for=wheel --strip-extras --extra=fleet${extra:+ --extra=$extra} pyproject.toml)" \
    "$scratch/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --build-deps-for=wheel \
        --strip-extras --extra=fleet ${extra:+--extra=$extra} --index-url=https://pypi.org/simple --no-emit-index-url \
        --output-file="deploy/requirements${extra:+-$extra}.lock" "$@" pyproject.toml
done
