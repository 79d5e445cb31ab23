package profile

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type prof_key profile ../../../bpf/profile.bpf.c -- -I../../../headers -I../../../bpf
