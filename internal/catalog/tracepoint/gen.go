package tracepoint

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type tp_key tracepoint ../../../bpf/tracepoint.bpf.c -- -I../../../headers -I../../../bpf
