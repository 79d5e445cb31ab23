package pagefaults

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type fault_stats pagefaults ../../../bpf/pagefaults.bpf.c -- -I../../../headers -I../../../bpf
