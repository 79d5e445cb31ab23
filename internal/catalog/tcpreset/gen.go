package tcpreset

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type reset_key tcpreset ../../../bpf/tcpreset.bpf.c -- -I../../../headers -I../../../bpf
