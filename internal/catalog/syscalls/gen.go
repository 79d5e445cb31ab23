package syscalls

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type sc_stat -type proc_key -type proc_stat -type err_key -type hist syscalls ../../../bpf/syscalls.bpf.c -- -I../../../headers -I../../../bpf
