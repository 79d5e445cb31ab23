package tcpconnect

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type dest_key -type dest_stats -type attempt tcpconnect ../../../bpf/tcpconnect.bpf.c -- -I../../../headers -I../../../bpf
