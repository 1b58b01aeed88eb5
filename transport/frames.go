package transport

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"
)

// Server frames are built straight into WebSocket wire format: a JSON
// payload behind an unmasked frame header. Built once, the same bytes go
// to every receiver, so fan-out never re-encodes.

const maxHeaderBytes = 10

// frame accumulates one JSON object behind room for its WebSocket header.
type frame struct{ buf []byte }

func newFrame(typ string, size int) *frame {
	f := &frame{buf: make([]byte, maxHeaderBytes, maxHeaderBytes+size+32+len(typ))}
	f.buf = append(f.buf, `{"type":"`...)
	f.buf = append(f.buf, typ...)
	f.buf = append(f.buf, '"')
	return f
}

func (f *frame) key(name string) {
	f.buf = append(f.buf, ',', '"')
	f.buf = append(f.buf, name...)
	f.buf = append(f.buf, '"', ':')
}

func (f *frame) str(name, value string) {
	f.key(name)
	f.buf = appendJSONString(f.buf, value)
}

func (f *frame) uint(name string, value uint64) {
	f.key(name)
	f.buf = strconv.AppendUint(f.buf, value, 10)
}

func (f *frame) int(name string, value int64) {
	f.key(name)
	f.buf = strconv.AppendInt(f.buf, value, 10)
}

// raw appends an already valid JSON value; an empty one is left out.
func (f *frame) raw(name string, value []byte) {
	if len(value) == 0 {
		return
	}
	f.key(name)
	f.buf = append(f.buf, value...)
}

// done closes the object and writes the header in front of it.
func (f *frame) done() []byte {
	f.buf = append(f.buf, '}')
	return wrapText(f.buf)
}

// wrapText puts a text-frame header in the first maxHeaderBytes of buf,
// right before the payload, and returns the frame.
func wrapText(buf []byte) []byte {
	return wrap(0x81, buf)
}

func wrap(opcode byte, buf []byte) []byte {
	n := len(buf) - maxHeaderBytes
	switch {
	case n < 126:
		buf[8], buf[9] = opcode, byte(n)
		return buf[8:]
	case n <= 0xffff:
		buf[6], buf[7] = opcode, 126
		binary.BigEndian.PutUint16(buf[8:], uint16(n))
		return buf[6:]
	default:
		buf[0], buf[1] = opcode, 127
		binary.BigEndian.PutUint64(buf[2:], uint64(n))
		return buf
	}
}

// FramePayload returns the JSON payload of a frame built here.
func FramePayload(frame []byte) []byte {
	switch frame[1] {
	case 126:
		return frame[4:]
	case 127:
		return frame[10:]
	default:
		return frame[2:]
	}
}

// MessageFrame is a publication as every subscriber receives it.
func MessageFrame(channel, from string, data []byte, offset uint64, epoch string, timestampMs int64) []byte {
	f := newFrame("message", len(channel)+len(from)+len(data)+len(epoch)+72)
	f.str("channel", channel)
	if from != "" {
		f.str("from", from)
	}
	f.raw("data", data)
	f.uint("offset", offset)
	f.str("epoch", epoch)
	f.int("timestamp", timestampMs)
	return f.done()
}

// JoinFrame tells a channel's subscribers that a user arrived.
func JoinFrame(channel, user string, info []byte) []byte {
	f := newFrame("join", len(channel)+len(user)+len(info)+32)
	f.str("channel", channel)
	f.str("user", user)
	f.raw("info", info)
	return f.done()
}

// LeaveFrame tells a channel's subscribers that a user's last connection left.
func LeaveFrame(channel, user string) []byte {
	f := newFrame("leave", len(channel)+len(user)+24)
	f.str("channel", channel)
	f.str("user", user)
	return f.done()
}

// PresenceBatchFrame carries join and leave events that happened close
// together, in order, each as its own join or leave frame would be.
func PresenceBatchFrame(channel string, events [][]byte) []byte {
	size := len(channel) + 48
	for _, e := range events {
		size += len(e)
	}
	f := newFrame("presence_batch", size)
	f.str("channel", channel)
	f.key("events")
	f.buf = append(f.buf, '[')
	for i, e := range events {
		if i > 0 {
			f.buf = append(f.buf, ',')
		}
		f.buf = append(f.buf, FramePayload(e)...)
	}
	f.buf = append(f.buf, ']')
	return f.done()
}

// PresenceMember is one user in a presence reply.
type PresenceMember struct {
	User        string
	Connections uint32
	Info        []byte
}

// PresenceFrame answers a presence request.
func PresenceFrame(channel string, members []PresenceMember, more bool, id []byte) []byte {
	f := newFrame("presence", len(channel)+len(id)+64*len(members)+48)
	f.str("channel", channel)
	f.raw("id", id)
	if more {
		f.key("more")
		f.buf = append(f.buf, "true"...)
	}
	f.key("users")
	f.buf = append(f.buf, '[')
	for i, m := range members {
		if i > 0 {
			f.buf = append(f.buf, ',')
		}
		f.buf = append(f.buf, `{"user":`...)
		f.buf = appendJSONString(f.buf, m.User)
		f.buf = append(f.buf, `,"connections":`...)
		f.buf = strconv.AppendUint(f.buf, uint64(m.Connections), 10)
		if len(m.Info) > 0 {
			f.buf = append(f.buf, `,"info":`...)
			f.buf = append(f.buf, m.Info...)
		}
		f.buf = append(f.buf, '}')
	}
	f.buf = append(f.buf, ']')
	return f.done()
}

// HistoryFrame answers a history request with stored message frames;
// more says that stored publications follow the last of them.
func HistoryFrame(channel string, frames [][]byte, offset uint64, epoch string, more bool, id []byte) []byte {
	size := len(channel) + len(epoch) + len(id) + 64
	for _, fr := range frames {
		size += len(fr)
	}
	f := newFrame("history", size)
	f.str("channel", channel)
	f.uint("offset", offset)
	f.str("epoch", epoch)
	f.raw("id", id)
	if more {
		f.key("more")
		f.buf = append(f.buf, "true"...)
	}
	f.key("publications")
	f.buf = append(f.buf, '[')
	for i, fr := range frames {
		if i > 0 {
			f.buf = append(f.buf, ',')
		}
		f.buf = append(f.buf, FramePayload(fr)...)
	}
	f.buf = append(f.buf, ']')
	return f.done()
}

// OffsetMismatchFrame refuses a compare-and-publish: the channel moved on.
func OffsetMismatchFrame(channel string, current uint64, id []byte) []byte {
	f := newFrame("error", len(channel)+len(id)+96)
	f.str("error", "Offset mismatch: "+channel+" is at offset "+strconv.FormatUint(current, 10))
	f.str("code", CodeOffsetMismatch)
	f.uint("offset", current)
	f.raw("id", id)
	return f.done()
}

// DirectFrame is data sent to one user.
func DirectFrame(from string, data []byte, timestampMs int64) []byte {
	f := newFrame("direct", len(from)+len(data)+32)
	if from != "" {
		f.str("from", from)
	}
	f.raw("data", data)
	f.int("timestamp", timestampMs)
	return f.done()
}

// SubscribedFrame answers a subscribe; recovered is set when recovery was asked for.
func SubscribedFrame(channel string, offset uint64, epoch string, recovered *bool, id []byte) []byte {
	f := newFrame("subscribed", len(channel)+len(epoch)+len(id)+64)
	f.str("channel", channel)
	f.uint("offset", offset)
	f.str("epoch", epoch)
	if recovered != nil {
		f.key("recovered")
		f.buf = strconv.AppendBool(f.buf, *recovered)
	}
	f.raw("id", id)
	return f.done()
}

// UnsubscribedFrame answers an unsubscribe.
func UnsubscribedFrame(channel string, id []byte) []byte {
	f := newFrame("unsubscribed", len(channel)+len(id)+16)
	f.str("channel", channel)
	f.raw("id", id)
	return f.done()
}

// RevokedFrame ends a subscription the client did not ask to end: code
// says why (forbidden: a refreshed token no longer allows the channel).
func RevokedFrame(channel, code, reason string) []byte {
	f := newFrame("unsubscribed", len(channel)+len(code)+len(reason)+48)
	f.str("channel", channel)
	f.str("code", code)
	f.str("reason", reason)
	return f.done()
}

// GapFrame tells a subscriber that its stream of channel jumps: the next
// publication it receives follows offset in epoch, and any between the
// last one it has and that were not delivered to it.
func GapFrame(channel, epoch string, offset uint64) []byte {
	f := newFrame("gap", len(channel)+len(epoch)+48)
	f.str("channel", channel)
	f.str("epoch", epoch)
	f.uint("offset", offset)
	return f.done()
}

// SkipFrame stands in for a publication that excluded the receiving user:
// offset of epoch is taken, so the subscriber's stream goes on without a
// gap, but its data is not for them.
func SkipFrame(channel, epoch string, offset uint64) []byte {
	f := newFrame("skip", len(channel)+len(epoch)+48)
	f.str("channel", channel)
	f.str("epoch", epoch)
	f.uint("offset", offset)
	return f.done()
}

// PublishedFrame acknowledges a publication that carried an id.
func PublishedFrame(channel string, offset uint64, id []byte) []byte {
	f := newFrame("published", len(channel)+len(id)+32)
	f.str("channel", channel)
	f.uint("offset", offset)
	f.raw("id", id)
	return f.done()
}

// SentFrame acknowledges a send to a user.
func SentFrame(user string, connections uint32, id []byte) []byte {
	f := newFrame("sent", len(user)+len(id)+32)
	f.str("user", user)
	f.uint("connections", uint64(connections))
	f.raw("id", id)
	return f.done()
}

// PongFrame answers a ping.
func PongFrame(id []byte) []byte {
	f := newFrame("pong", len(id))
	f.raw("id", id)
	return f.done()
}

// WelcomeFrame is the first frame of every connection.
func WelcomeFrame(user, connectionID string) []byte {
	f := newFrame("welcome", len(user)+len(connectionID)+32)
	f.str("user", user)
	f.str("connection_id", connectionID)
	return f.done()
}

// AuthenticatedFrame confirms a token.
func AuthenticatedFrame(user string) []byte {
	f := newFrame("authenticated", len(user)+16)
	f.str("user_id", user)
	return f.done()
}

// ErrorFrame reports a refused frame or a failed operation.
func ErrorFrame(code, text string, id []byte) []byte {
	f := newFrame("error", len(code)+len(text)+len(id)+24)
	f.str("error", text)
	f.str("code", code)
	f.raw("id", id)
	return f.done()
}

// CloseFrame is a WebSocket close control frame with a code and reason.
func CloseFrame(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	buf := make([]byte, maxHeaderBytes, maxHeaderBytes+2+len(reason))
	buf = binary.BigEndian.AppendUint16(buf, code)
	buf = append(buf, reason...)
	return wrap(0x88, buf)
}

// PingControlFrame is the server's heartbeat.
var PingControlFrame = wrap(0x89, make([]byte, maxHeaderBytes))

// PongControlFrame answers a WebSocket ping control frame.
func PongControlFrame(payload []byte) []byte {
	buf := make([]byte, maxHeaderBytes, maxHeaderBytes+len(payload))
	buf = append(buf, payload...)
	return wrap(0x8A, buf)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
