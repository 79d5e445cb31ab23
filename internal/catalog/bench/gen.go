package bench

//go:generate go tool bpf2go -tags linux -target amd64,arm64 benchEmit ../../../bpf/bench_emit.bpf.c -- -I../../../headers -I../../../bpf
