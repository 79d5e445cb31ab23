// Package install tests install.sh, the installer at the top of the
// repository, and what it writes: the binary, the default configuration
// (checked against config.Defaults), the data directory, and the systemd
// unit (checked with systemd-analyze verify). The tests run the script as
// root into a staging root (--destdir), with its test-only detection
// inputs (NANNYAGENT_INSTALL_*) standing in for the machine.
package install
