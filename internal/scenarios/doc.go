// Package scenarios reproduces real problems on the machine it runs on
// (a tmpfs out of inodes, a process OOM-killed in a memory-limited
// cgroup, a network namespace with a dead resolver, busy CPUs, a disk
// saturated by synchronous writes, a server denied its files, block
// device I/O errors, a crashing service, a port already taken) and runs
// `nannyagent diagnose --json` with the offline engine against each, to
// check that the answer names the cause and its evidence. It holds tests
// only; they need root and clean up after themselves, failed or not.
package scenarios
