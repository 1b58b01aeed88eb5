package transport

// Every close code and protocol error code the broker uses, each with what
// it means for a client that wants to stay connected. docs/protocol.md
// lists the same codes for client authors; the Go and browser clients
// decide from them whether to reconnect.

// Close codes of the WebSocket close frame.
const (
	// CloseNormal: the client sent `disconnect`. Do not reconnect.
	CloseNormal = 1000
	// CloseAbnormal is never sent: it is what a client sees when the
	// socket drops without a close frame. Reconnect with backoff.
	CloseAbnormal = 1006
	// CloseInvalidText: a text frame was not valid UTF-8 (sent by gws).
	// Reconnecting with the same frames fails the same way.
	CloseInvalidText = 1007
	// CloseFrameTooLarge: a frame exceeded Options.MaxFrameBytes (sent by
	// gws, from the frame's header). Reconnect without sending it again.
	CloseFrameTooLarge = 1009
	// CloseInternalError: the connection could not be set up (its actor
	// or its user's session failed). Reconnect with backoff.
	CloseInternalError = 1011
	// CloseServiceRestart: the node is shutting down or was cut off from
	// the cluster. Reconnect at once, to another node if there is one.
	CloseServiceRestart = 1012
	// CloseAuth: authentication failed or the token expired. Reconnect
	// only with a fresh token.
	CloseAuth = 4001
	// CloseRateLimited: over a rate limit under the disconnect policy.
	// Reconnect with backoff, and send less.
	CloseRateLimited = 4008
	// CloseSlowConsumer: more frames or bytes waited for the connection
	// than its outbox holds. Reconnect and recover what was missed.
	CloseSlowConsumer = 4009
	// CloseKicked: disconnected by the server (the HTTP API's
	// `disconnect`). Do not reconnect.
	CloseKicked = 4010
	// CloseIdle: nothing arrived for the idle timeout. Reconnect.
	CloseIdle = 4011
	// CloseTooManyConnections: the user already holds as many connections
	// as the broker allows. Do not reconnect: it would be refused again.
	CloseTooManyConnections = 4029
)

// Machine codes of protocol errors, the `code` of an `error` frame (and of
// an HTTP API error). The connection stays open; a refused frame may be
// sent again only where it says so.
const (
	// CodeInvalidJSON: the frame is not valid JSON. Do not resend.
	CodeInvalidJSON = "invalid_json"
	// CodeInvalidFrame: valid JSON but not an object, or a field of the
	// wrong type. Do not resend.
	CodeInvalidFrame = "invalid_frame"
	// CodeInvalidID: `id` is neither a number nor a string. Do not resend.
	CodeInvalidID = "invalid_id"
	// CodeMissingType: no `type`, or not a string. Do not resend.
	CodeMissingType = "missing_type"
	// CodeUnknownType: a `type` the broker does not know. Do not resend.
	CodeUnknownType = "unknown_type"
	// CodeInvalidChannel: the channel is missing or not a valid name.
	CodeInvalidChannel = "invalid_channel"
	// CodeInvalidUser: a `send` without a valid user id.
	CodeInvalidUser = "invalid_user"
	// CodeMissingData: a publication or send without `data`.
	CodeMissingData = "missing_data"
	// CodeDataTooLarge: `data` is longer than Limits.MaxDataBytes.
	CodeDataTooLarge = "data_too_large"
	// CodeBinaryFrame: a binary frame; the protocol is JSON text.
	CodeBinaryFrame = "binary_not_supported"
	// CodeUnavailable: the channel or session did not answer in time.
	// Retry with backoff: it is moving, or its node is failing over.
	CodeUnavailable = "unavailable"
	// CodeInvalidToken: an `auth` frame without a token string.
	CodeInvalidToken = "invalid_token"
	// CodeForbidden: the token's claims or the deny rules do not allow it.
	// Retry only with a token that does.
	CodeForbidden = "forbidden"
	// CodeRateLimited: over a rate limit; the frame was dropped. Retry
	// after a pause.
	CodeRateLimited = "rate_limited"
	// CodeUnauthenticated: authentication failed; the connection closes
	// with CloseAuth.
	CodeUnauthenticated = "unauthenticated"
	// CodeTooManySubs: the connection holds as many channels as allowed.
	// Retry after leaving one.
	CodeTooManySubs = "too_many_subscriptions"
	// CodeTooManyConns: the user holds as many connections as allowed;
	// the connection closes with CloseTooManyConnections.
	CodeTooManyConns = "too_many_connections"
	// CodeInfoTooLarge: a subscribe's `info` exceeds Limits.MaxInfoBytes.
	CodeInfoTooLarge = "info_too_large"
	// CodeInvalidRecover: `recover` is not {"offset": N, "epoch": "E"}.
	CodeInvalidRecover = "invalid_recover"
	// CodeChannelFull: the channel holds as many distinct users as its
	// capacity. Retry later.
	CodeChannelFull = "channel_full"
	// CodeOffsetMismatch: compare-and-publish found the channel at another
	// offset (the error's `offset`). Decide again from there.
	CodeOffsetMismatch = "offset_mismatch"
	// CodeOutcomeUnknown: the channel's node failed while the publication
	// was in flight. Look in history before publishing it again.
	CodeOutcomeUnknown = "outcome_unknown"
	// CodeInternal: the HTTP API failed in a way nobody foresaw (a bug;
	// status 500). Retrying may not help.
	CodeInternal = "internal_error"
)
