// Package transport turns bytes into broker messages and back: the
// WebSocket server (gws), the JSON protocol codec, per-connection outboxes
// and the HTTP endpoints.
package transport

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// Limits the decoder enforces on client frames.
type Limits struct {
	// MaxDataBytes bounds the raw JSON `data` of a publication or send.
	MaxDataBytes int
	// MaxChannelBytes bounds channel names (at most MaxChannelNameBytes).
	MaxChannelBytes int
	// MaxInfoBytes bounds the presence info a subscribe may carry.
	MaxInfoBytes int
}

// MaxHistoryLimit caps how many publications one history reply carries.
const MaxHistoryLimit = 1000

// MaxPresenceLimit caps how many members one presence reply to a client
// carries; "more" says others follow.
const MaxPresenceLimit = 1000

// ProtocolError is a client frame the broker refuses. It becomes an
// `error` frame; the connection stays open.
type ProtocolError struct {
	Code string // stable, machine readable
	Text string // for humans
	ID   []byte // the offending frame's id, raw JSON, when it had a valid one
}

func (e *ProtocolError) Error() string { return e.Code + ": " + e.Text }

// Longest channel name and user id the protocol allows.
const (
	MaxChannelNameBytes = 255
	MaxUserIDBytes      = 255
)

// clientFrame holds the fields of any client frame, undecoded, so each can
// be checked for its JSON kind and relayed verbatim.
type clientFrame struct {
	Type    json.RawMessage `json:"type"`
	Channel json.RawMessage `json:"channel"`
	Data    json.RawMessage `json:"data"`
	ID      json.RawMessage `json:"id"`
	User    json.RawMessage `json:"user"`
	Token   json.RawMessage `json:"token"`

	Presence     json.RawMessage `json:"presence"`
	Info         json.RawMessage `json:"info"`
	Recover      json.RawMessage `json:"recover"`
	Since        json.RawMessage `json:"since"`
	Limit        json.RawMessage `json:"limit"`
	ExpectOffset json.RawMessage `json:"expect_offset"`
	After        json.RawMessage `json:"after"`
}

var commandKinds = map[string]pb.ClientCommand_Kind{
	"subscribe":   pb.ClientCommand_KIND_SUBSCRIBE,
	"unsubscribe": pb.ClientCommand_KIND_UNSUBSCRIBE,
	"message":     pb.ClientCommand_KIND_PUBLISH,
	"publish":     pb.ClientCommand_KIND_PUBLISH,
	"send":        pb.ClientCommand_KIND_SEND,
	"ping":        pb.ClientCommand_KIND_PING,
	"disconnect":  pb.ClientCommand_KIND_DISCONNECT,
	"auth":        pb.ClientCommand_KIND_AUTH,
	"presence":    pb.ClientCommand_KIND_PRESENCE,
	"history":     pb.ClientCommand_KIND_HISTORY,
}

// DecodeCommand parses one client text frame.
func DecodeCommand(frame []byte, limits Limits) (*pb.ClientCommand, *ProtocolError) {
	trimmed := bytes.TrimLeft(frame, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if json.Valid(frame) {
			return nil, &ProtocolError{Code: CodeInvalidFrame, Text: "Frame must be a JSON object"}
		}
		return nil, &ProtocolError{Code: CodeInvalidJSON, Text: "Invalid JSON"}
	}
	if !json.Valid(frame) {
		return nil, &ProtocolError{Code: CodeInvalidJSON, Text: "Invalid JSON"}
	}
	// The command outlives the frame's read buffer: one copy serves all
	// the members it keeps.
	var f clientFrame
	if !splitFrame(bytes.Clone(frame), &f) {
		f = decodeFrameSlowly(frame)
	}
	if len(f.ID) > 0 && !isNumberOrString(f.ID) {
		return nil, &ProtocolError{Code: CodeInvalidID, Text: "id must be a number or a string"}
	}
	fail := func(code, text string) (*pb.ClientCommand, *ProtocolError) {
		return nil, &ProtocolError{Code: code, Text: text, ID: f.ID}
	}
	if len(f.Type) == 0 || isNull(f.Type) {
		return fail(CodeMissingType, "Missing message type")
	}
	kind, known := pb.ClientCommand_KIND_UNSPECIFIED, false
	if body, plain := plainString(f.Type); plain {
		kind, known = commandKinds[string(body)]
	}
	if !known {
		typ, ok := decodeString(f.Type)
		if !ok {
			return fail(CodeMissingType, "Message type must be a string")
		}
		if kind, known = commandKinds[typ]; !known {
			return fail(CodeUnknownType, "Unknown message type: "+typ)
		}
	}
	cmd := &pb.ClientCommand{Kind: kind, Id: f.ID}
	switch kind {
	case pb.ClientCommand_KIND_SUBSCRIBE, pb.ClientCommand_KIND_UNSUBSCRIBE, pb.ClientCommand_KIND_PUBLISH,
		pb.ClientCommand_KIND_PRESENCE, pb.ClientCommand_KIND_HISTORY:
		channel, perr := decodeChannel(f.Channel, limits.MaxChannelBytes)
		if perr != nil {
			perr.ID = f.ID
			return nil, perr
		}
		cmd.Channel = channel
	case pb.ClientCommand_KIND_SEND:
		user, ok := decodeString(f.User)
		if !ok || !ValidUserID(user) {
			return fail(CodeInvalidUser, "send needs a user: a string of 1-255 bytes")
		}
		cmd.User = user
	case pb.ClientCommand_KIND_AUTH:
		token, ok := decodeString(f.Token)
		if !ok || token == "" {
			return fail(CodeInvalidToken, "auth needs a token string")
		}
		cmd.Token = token
	}
	if perr := decodeOptions(&f, cmd, limits); perr != nil {
		perr.ID = f.ID
		return nil, perr
	}
	if kind == pb.ClientCommand_KIND_PUBLISH || kind == pb.ClientCommand_KIND_SEND {
		if len(f.Data) == 0 {
			return fail(CodeMissingData, "Missing data")
		}
		if len(f.Data) > limits.MaxDataBytes {
			return fail(CodeDataTooLarge, "Data exceeds "+strconv.Itoa(limits.MaxDataBytes)+" bytes")
		}
		cmd.Data = f.Data
	}
	return cmd, nil
}

// decodeFrameSlowly leaves a frame splitFrame cannot take to encoding/json.
// Its own variable keeps the fast path's frame off the heap.
func decodeFrameSlowly(validJSON []byte) clientFrame {
	f := new(clientFrame)
	_ = json.Unmarshal(validJSON, f) // cannot fail on a valid object
	return *f
}

// decodeOptions reads the optional fields of subscribe, history and publish.
// decodeLimit reads a page size: a positive integer, capped at most;
// absent, most.
func decodeLimit(raw json.RawMessage, most uint32) (uint32, *ProtocolError) {
	if len(raw) == 0 {
		return most, nil
	}
	limit, ok := decodeCount(raw)
	if !ok || limit == 0 {
		return 0, &ProtocolError{Code: CodeInvalidFrame, Text: "limit must be a positive integer"}
	}
	return uint32(min(limit, uint64(most))), nil
}

func decodeOptions(f *clientFrame, cmd *pb.ClientCommand, limits Limits) *ProtocolError {
	switch cmd.Kind {
	case pb.ClientCommand_KIND_SUBSCRIBE:
		if len(f.Presence) > 0 {
			switch string(f.Presence) {
			case "true":
				cmd.Presence = true
			case "false":
			default:
				return &ProtocolError{Code: CodeInvalidFrame, Text: "presence must be true or false"}
			}
		}
		if len(f.Info) > 0 && !isNull(f.Info) {
			if limits.MaxInfoBytes > 0 && len(f.Info) > limits.MaxInfoBytes {
				return &ProtocolError{Code: CodeInfoTooLarge, Text: "info exceeds " + strconv.Itoa(limits.MaxInfoBytes) + " bytes"}
			}
			cmd.Info = f.Info
		}
		if len(f.Recover) > 0 && !isNull(f.Recover) {
			var r struct {
				Offset json.RawMessage `json:"offset"`
				Epoch  json.RawMessage `json:"epoch"`
			}
			_ = json.Unmarshal(f.Recover, &r)
			offset, okOffset := decodeCount(r.Offset)
			epoch, okEpoch := decodeString(r.Epoch)
			if !okOffset || !okEpoch {
				return &ProtocolError{Code: CodeInvalidRecover, Text: `recover must be {"offset": N, "epoch": "E"}`}
			}
			cmd.Recover, cmd.RecoverOffset, cmd.RecoverEpoch = true, offset, epoch
		}
	case pb.ClientCommand_KIND_PRESENCE:
		if len(f.After) > 0 {
			after, ok := decodeString(f.After)
			if !ok {
				return &ProtocolError{Code: CodeInvalidFrame, Text: "after must be a user id string"}
			}
			cmd.After = after
		}
		limit, perr := decodeLimit(f.Limit, MaxPresenceLimit)
		if perr != nil {
			return perr
		}
		cmd.Limit = limit
	case pb.ClientCommand_KIND_HISTORY:
		if len(f.Since) > 0 {
			since, ok := decodeCount(f.Since)
			if !ok {
				return &ProtocolError{Code: CodeInvalidFrame, Text: "since must be a non-negative integer"}
			}
			cmd.Since = since
		}
		if len(f.Limit) > 0 {
			limit, perr := decodeLimit(f.Limit, MaxHistoryLimit)
			if perr != nil {
				return perr
			}
			cmd.Limit = limit
		}
	case pb.ClientCommand_KIND_PUBLISH:
		if len(f.ExpectOffset) > 0 {
			expect, ok := decodeCount(f.ExpectOffset)
			if !ok {
				return &ProtocolError{Code: CodeInvalidFrame, Text: "expect_offset must be a non-negative integer"}
			}
			cmd.HasExpectOffset, cmd.ExpectOffset = true, expect
		}
	}
	return nil
}

// decodeCount reads a non-negative JSON integer.
func decodeCount(raw json.RawMessage) (uint64, bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	return n, err == nil
}

func decodeChannel(raw json.RawMessage, maxBytes int) (string, *ProtocolError) {
	if len(raw) == 0 || isNull(raw) {
		return "", &ProtocolError{Code: CodeInvalidChannel, Text: "Missing channel"}
	}
	name, ok := decodeString(raw)
	if !ok || !ValidChannel(name) {
		return "", &ProtocolError{Code: CodeInvalidChannel,
			Text: "Invalid channel name: 1-255 bytes of letters, digits and _ - . : @ / ="}
	}
	if maxBytes > 0 && len(name) > maxBytes {
		return "", &ProtocolError{Code: CodeInvalidChannel,
			Text: "Invalid channel name: longer than " + strconv.Itoa(maxBytes) + " bytes"}
	}
	return name, nil
}

// ValidChannel reports whether name is a legal channel name.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelNameBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '-', c == '.', c == ':', c == '@', c == '/', c == '=':
		default:
			return false
		}
	}
	return true
}

// ValidUserID reports whether id is usable as a user id: 1-255 bytes of
// valid UTF-8 without control characters.
func ValidUserID(id string) bool {
	if len(id) == 0 || len(id) > MaxUserIDBytes || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// ValidJSON reports whether data is one complete JSON value.
func ValidJSON(data []byte) bool { return len(data) > 0 && json.Valid(data) }

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func isNumberOrString(raw json.RawMessage) bool {
	c := raw[0]
	return c == '"' || c == '-' || (c >= '0' && c <= '9')
}

func decodeString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if body, plain := plainString(raw); plain {
		return string(body), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// plainString returns the contents of a JSON string that is printable ASCII
// without escapes, which need no decoding.
func plainString(raw json.RawMessage) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c < 0x20 || c >= 0x7f || c == '\\' || c == '"' {
			return nil, false
		}
	}
	return body, true
}
