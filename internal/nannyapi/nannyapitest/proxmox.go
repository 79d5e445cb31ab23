package nannyapitest

import "net/http"

// proxmoxState holds the ingested clusters, nodes and guests (§2.8).
type proxmoxState struct{}

// handleProxmox serves /api/proxmox/{node,cluster,lxc,qemu} and the
// user listings.
func (s *Server) handleProxmox(w http.ResponseWriter, r *http.Request, body []byte) { notFound(w) }
