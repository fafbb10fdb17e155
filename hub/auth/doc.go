// Package auth decides who is asking and what they may reach: agents
// (enrolled client certificates, static per-cluster tokens), callers
// (client certificates, static tokens, TokenReview on the host cluster),
// authorization (SubjectAccessReview on the host, or allow-all), and the
// single admission check every front end makes before a stream is opened
// ([Admission]).
//
// It builds on package session (admission returns the session it found)
// and must not import the front ends, enrollment, fleet or propagation.
package auth
