package tcplife

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event tcplife ../../../bpf/tcplife.bpf.c -- -I../../../headers -I../../../bpf
