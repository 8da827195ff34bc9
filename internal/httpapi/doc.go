// Package httpapi is the HTTP face of socnet: the JSON API of the "OTUS
// Highload Architect" course contract (api/openapi.yaml), plus /healthz and
// the extensions docs/API.md lists. NewServer builds the handler; routes.go
// lists every route. The HTTP metrics go to a registry that the API does not
// serve.
//
// It decodes and checks input, limits the routes that hash passwords, calls
// the social stores and maps social.Error codes to HTTP statuses (the
// statuses of internal/httpserve, shared with counterd) and the course's
// numeric codes in one place (errorKindOf). It must not
// hold SQL or domain rules: those live in internal/postgres and internal/social.
package httpapi
