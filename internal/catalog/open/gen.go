package open

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type open_event open ../../../bpf/open.bpf.c -- -I../../../headers -I../../../bpf
