package kfunc

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type kf_key -type kf_stats kfunc ../../../bpf/kfunc.bpf.c -- -I../../../headers -I../../../bpf
