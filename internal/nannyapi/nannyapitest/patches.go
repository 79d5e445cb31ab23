package nannyapitest

import "net/http"

// patchState is the scripts collection and the patch results (§2.9).
type patchState struct{}

// handlePatches serves /api/patches and /api/patches/{id}/result.
func (s *Server) handlePatches(w http.ResponseWriter, r *http.Request, body []byte) { notFound(w) }

// handleFiles serves the PocketBase file API (/api/files/<collection>/<record>/<file>).
func (s *Server) handleFiles(w http.ResponseWriter, r *http.Request) { notFound(w) }

// handleScripts serves /api/scripts/{id}/validate.
func (s *Server) handleScripts(w http.ResponseWriter, r *http.Request) { notFound(w) }
