package exec

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type exec_event exec ../../../bpf/exec.bpf.c -- -I../../../headers -I../../../bpf
