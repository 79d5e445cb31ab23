package reclaim

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type reclaim_start -type proc_key -type proc_stat -type hist reclaim ../../../bpf/reclaim.bpf.c -- -I../../../headers -I../../../bpf
