package drops

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type drop_key drops ../../../bpf/drops.bpf.c -- -I../../../headers -I../../../bpf
