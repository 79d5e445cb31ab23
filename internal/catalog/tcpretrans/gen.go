package tcpretrans

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type retrans_key -type retrans_val tcpretrans ../../../bpf/tcpretrans.bpf.c -- -I../../../headers -I../../../bpf
