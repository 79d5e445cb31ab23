package catalogtest

import (
	"github.com/cilium/ebpf/link"
)

func linkAlive(id uint32) bool {
	l, err := link.NewFromID(link.ID(id))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
