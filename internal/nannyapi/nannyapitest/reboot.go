package nannyapitest

import "net/http"

// rebootState is what the reboot monitor needs (§2.10).
type rebootState struct{}

// handleReboot serves /api/reboot, /api/reboot/{id} and
// /api/reboot/{id}/acknowledge.
func (s *Server) handleReboot(w http.ResponseWriter, r *http.Request, body []byte) { notFound(w) }

// handleRebootRecordUpdate serves PATCH
// /api/collections/reboot_operations/records/{id}, which the
// collection's UpdateRule allows the agent (§2.10, §7.8).
func (s *Server) handleRebootRecordUpdate(w http.ResponseWriter, r *http.Request, body []byte) {
	notFound(w)
}
