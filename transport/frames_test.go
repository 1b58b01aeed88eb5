package transport

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFramesAreValidJSONBehindATextHeader(t *testing.T) {
	frames := map[string][]byte{
		"message":      MessageFrame("chat:1", "al\"ice", []byte(`{"a":1}`), 7, "e1", 1700000000000),
		"direct":       DirectFrame("", []byte(`[1,2]`), 1),
		"subscribed":   SubscribedFrame("c", 3, "e1", nil, []byte(`"x"`)),
		"unsubscribed": UnsubscribedFrame("c", nil),
		"published":    PublishedFrame("c", 9, []byte(`5`)),
		"sent":         SentFrame("bob", 2, []byte(`1`)),
		"pong":         PongFrame(nil),
		"welcome":      WelcomeFrame("bob", "n-1"),
		"error":        ErrorFrame("invalid_json", "Invalid JSON", []byte(`"q"`)),
		"skip":         SkipFrame("c", "e1", 4),
	}
	for typ, frame := range frames {
		if frame[0] != 0x81 {
			t.Errorf("%s: first byte %x, want FIN+text", typ, frame[0])
		}
		payload := FramePayload(frame)
		if int(frame[1]) != len(payload) {
			t.Errorf("%s: header length %d, payload %d", typ, frame[1], len(payload))
		}
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Errorf("%s: %v: %s", typ, err, payload)
			continue
		}
		if m["type"] != typ {
			t.Errorf("%s: type %v", typ, m["type"])
		}
	}
	var m map[string]any
	_ = json.Unmarshal(FramePayload(frames["message"]), &m)
	if m["from"] != `al"ice` || m["offset"] != float64(7) || m["timestamp"] != float64(1700000000000) {
		t.Errorf("message = %v", m)
	}
}

func TestFrameHeaderLengths(t *testing.T) {
	for _, size := range []int{0, 100, 125, 126, 1000, 65535, 65536, 200000} {
		data := []byte(`"` + strings.Repeat("x", size) + `"`)
		frame := MessageFrame("c", "", data, 1, "e", 1)
		payload := FramePayload(frame)
		var declared int
		switch frame[1] {
		case 126:
			declared = int(binary.BigEndian.Uint16(frame[2:4]))
		case 127:
			declared = int(binary.BigEndian.Uint64(frame[2:10]))
		default:
			declared = int(frame[1])
		}
		if declared != len(payload) || !json.Valid(payload) {
			t.Errorf("data of %d bytes: header says %d, payload is %d", size, declared, len(payload))
		}
	}
}

func TestCloseFrame(t *testing.T) {
	f := CloseFrame(4009, "slow consumer")
	if f[0] != 0x88 || int(f[1]) != 2+len("slow consumer") || binary.BigEndian.Uint16(f[2:4]) != 4009 {
		t.Fatalf("close frame % x", f)
	}
	if long := CloseFrame(1000, strings.Repeat("r", 300)); len(long) > 127 {
		t.Fatalf("close frame payload must stay within 125 bytes, got %d", len(long)-2)
	}
}

// FuzzJSONString: any Go string encodes to a JSON string that decodes to
// the same text, invalid UTF-8 bytes each becoming U+FFFD.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\ slash", "\x00\x1f\x7f", "é漢🎮", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("%q encoded as invalid JSON %s: %v", s, enc, err)
		}
		var want strings.Builder
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			want.WriteRune(r)
			i += size
		}
		if got != want.String() {
			t.Fatalf("%q round-tripped to %q", s, got)
		}
	})
}

func BenchmarkMessageFrame(b *testing.B) {
	data := []byte(`{"x":12,"y":7,"seq":991,"pad":"0123456789abcdef0123456789"}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = MessageFrame("game:lobby:42", "player-1842", data, 123456, "5d1c9e07", 1700000000000)
	}
}
