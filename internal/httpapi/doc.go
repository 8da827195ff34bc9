// Package httpapi is the HTTP face of socnet: the JSON API of the "OTUS
// Highload Architect" course contract (api/openapi.yaml), plus /healthz and
// /metrics. NewServer builds the handler; routes.go lists every route.
//
// It decodes and checks input, calls the social stores and maps
// social.Error codes to HTTP statuses in one place (errorKinds). It must not
// hold SQL or domain rules: those live in internal/postgres and internal/social.
package httpapi
