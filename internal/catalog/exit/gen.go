package exit

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type exit_event -type exit_key -type exit_val exit ../../../bpf/exit.bpf.c -- -I../../../headers -I../../../bpf
