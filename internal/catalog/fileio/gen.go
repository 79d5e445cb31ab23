package fileio

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type file_key -type file_stats -type file_id -type file_name fileio ../../../bpf/fileio.bpf.c -- -I../../../headers -I../../../bpf
