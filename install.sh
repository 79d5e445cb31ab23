#!/usr/bin/env bash
# install.sh: installing nannyagent as a service is not available yet.
# Build and run from the checkout instead: `make build && sudo bin/nannyagent`.
echo "install.sh: not implemented yet; build with 'make build' and run bin/nannyagent" >&2
exit 1
