package transport

import "errors"

// Errors of the Backend operations (the broker's Go API, which the HTTP
// API calls). The broker wraps them with what it was doing
// (`publish "a b": invalid channel name`); callers test them with
// errors.Is, and the HTTP API answers each with its status in apiStatus.
var (
	// ErrInvalidChannel: the channel name is not one the protocol allows.
	ErrInvalidChannel = errors.New("invalid channel name")
	// ErrInvalidData: the data is not one complete JSON value.
	ErrInvalidData = errors.New("data is not valid JSON")
	// ErrUnavailable: a channel, session or node did not answer in time.
	// Retrying may succeed: it may be moving, or its node failing over.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrOutcomeUnknown: a publication may have reached its channel but
	// was not answered in time (its replicas did not confirm it, or its
	// node failed and no successor answered): it may be published or not.
	// Publishing it again may publish it twice; read the channel's history
	// to tell.
	ErrOutcomeUnknown = errors.New("the publication's outcome is unknown")
)
