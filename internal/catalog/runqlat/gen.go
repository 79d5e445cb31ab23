package runqlat

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type runq_start -type proc_hist -type hist runqlat ../../../bpf/runqlat.bpf.c -- -I../../../headers -I../../../bpf
