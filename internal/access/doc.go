// Package access decides who may call a gather server: bearer-token authentication for callers
// without a client certificate, and authorization by a grpc-go policy
// (google.golang.org/grpc/authz) keyed on the caller's identity. A Guard provides both as
// server interceptors, to be chained after the interceptors that record every call (metrics,
// lifecycle) and before admission control, so that a refused caller is counted but never takes
// a query slot.
//
// # Authorization policy
//
// The policy is grpc-go's JSON authorization policy: a name, allow_rules and optional
// deny_rules, each rule matching a source (principals) and a request (paths, headers).
// Principals are matched against the caller's verified client certificate: its URI SANs, else
// its DNS SANs, else its subject, the order package peerid names a caller by. Paths are full
// method names and may end in "*":
//
//	{
//	  "name": "gather",
//	  "allow_rules": [
//	    {"name": "qs", "source": {"principals": ["spiffe://example.org/qs"]},
//	     "request": {"paths": ["/gather.query.v1.QueryService/*", "/grpc.health.v1.Health/*"]}},
//	    {"name": "frontend-token",
//	     "request": {"paths": ["/gather.query.v1.QueryService/*"],
//	                 "headers": [{"key": "x-gather-token-name", "values": ["search-frontend"]}]}},
//	    {"name": "probes", "request": {"paths": ["/grpc.health.v1.Health/*"]}}
//	  ]
//	}
//
// A caller authenticated by a bearer token has no certificate; a rule names it by the header
// TokenHeader, which the Guard sets to the token's name after checking the token and removes
// from every call that a client sent it with, so that it cannot be forged. The policy file is
// read again when it changes; a new version that does not parse is refused with a warning and
// the previous one stays in force.
//
// A refused call ends with PERMISSION_DENIED when the caller proved who it is (a certificate or
// a token) and UNAUTHENTICATED when it did not, with a message that names the caller (peerid),
// the method and the policy, and one log line.
//
// # Bearer tokens
//
// With a tokens file, every call must carry "authorization: Bearer TOKEN" with one of its
// tokens, or come over a connection with a verified client certificate; health checks are
// exempt, so that load balancers can probe. Tokens are compared in constant time (as SHA-256
// digests, so that their lengths do not show either), never logged, and removed from the call's
// metadata once checked. The token's name becomes the caller's identity (peerid.NewContext,
// "auth:token:NAME"), which admission control and logs see.
package access
