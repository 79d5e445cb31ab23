package signals

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type sig_key signals ../../../bpf/signals.bpf.c -- -I../../../headers -I../../../bpf
