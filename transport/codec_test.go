package transport

import (
	"encoding/json"
	"strings"
	"testing"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

var testLimits = Limits{MaxDataBytes: 1024, MaxInfoBytes: 1024}

func TestDecodeCommandAcceptsEveryType(t *testing.T) {
	cases := []struct {
		frame string
		want  *pb.ClientCommand
	}{
		{`{"type":"subscribe","channel":"chat:room1","id":1}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_SUBSCRIBE, Channel: "chat:room1", Id: []byte(`1`)}},
		{`{"type":"unsubscribe","channel":"a/b=c@d.e_f-g"}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_UNSUBSCRIBE, Channel: "a/b=c@d.e_f-g"}},
		{`{"type":"message","channel":"c","data":{"x":[1,2]},"id":"m"}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PUBLISH, Channel: "c", Data: []byte(`{"x":[1,2]}`), Id: []byte(`"m"`)}},
		{`{"type":"publish","channel":"c","data":null}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PUBLISH, Channel: "c", Data: []byte(`null`)}},
		{`{"type":"send","user":"bob","data":"hi"}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_SEND, User: "bob", Data: []byte(`"hi"`)}},
		{` {"type":"ping","id":-2.5}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PING, Id: []byte(`-2.5`)}},
		{`{"type":"disconnect"}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_DISCONNECT}},
		{`{"type":"presence","channel":"c"}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PRESENCE, Channel: "c", Limit: MaxPresenceLimit}},
		{`{"type":"presence","channel":"c","after":"bob","limit":5000}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PRESENCE, Channel: "c", After: "bob", Limit: MaxPresenceLimit}},
		{`{"type":"presence","channel":"c","limit":2}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PRESENCE, Channel: "c", Limit: 2}},
		{`{"type":"history","channel":"c","since":5,"limit":5000}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_HISTORY, Channel: "c", Since: 5, Limit: MaxHistoryLimit}},
		{`{"type":"subscribe","channel":"c","presence":true,"info":{"n":1},"recover":{"offset":3,"epoch":"e"}}`,
			&pb.ClientCommand{Kind: pb.ClientCommand_KIND_SUBSCRIBE, Channel: "c", Presence: true, Info: []byte(`{"n":1}`), Recover: true, RecoverOffset: 3, RecoverEpoch: "e"}},
		{`{"type":"message","channel":"c","data":1,"expect_offset":0}`, &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PUBLISH, Channel: "c", Data: []byte(`1`), HasExpectOffset: true}},
	}
	for _, tc := range cases {
		got, perr := DecodeCommand([]byte(tc.frame), testLimits)
		if perr != nil {
			t.Errorf("%s: %v", tc.frame, perr)
			continue
		}
		if got.Kind != tc.want.Kind || got.Channel != tc.want.Channel || got.User != tc.want.User ||
			string(got.Data) != string(tc.want.Data) || string(got.Id) != string(tc.want.Id) ||
			got.Presence != tc.want.Presence || string(got.Info) != string(tc.want.Info) || got.Recover != tc.want.Recover ||
			got.RecoverOffset != tc.want.RecoverOffset || got.RecoverEpoch != tc.want.RecoverEpoch ||
			got.Since != tc.want.Since || got.Limit != tc.want.Limit ||
			got.HasExpectOffset != tc.want.HasExpectOffset || got.ExpectOffset != tc.want.ExpectOffset {
			t.Errorf("%s: got %v, want %v", tc.frame, got, tc.want)
		}
	}
}

func TestDecodeCommandRefusesBadFrames(t *testing.T) {
	cases := []struct{ frame, code, id string }{
		{``, CodeInvalidJSON, ""},
		{`{`, CodeInvalidJSON, ""},
		{`{"type":"ping"}x`, CodeInvalidJSON, ""},
		{`null`, CodeInvalidFrame, ""},
		{`42`, CodeInvalidFrame, ""},
		{`{}`, CodeMissingType, ""},
		{`{"type":["ping"],"id":5}`, CodeMissingType, "5"},
		{`{"type":"PING"}`, CodeUnknownType, ""},
		{`{"type":"ping","id":null}`, CodeInvalidID, ""},
		{`{"type":"ping","id":[1]}`, CodeInvalidID, ""},
		{`{"type":"subscribe","channel":"é"}`, CodeInvalidChannel, ""},
		{`{"type":"subscribe","channel":null,"id":"n"}`, CodeInvalidChannel, `"n"`},
		{`{"type":"message","channel":"c"}`, CodeMissingData, ""},
		{`{"type":"message","channel":"c","data":"` + strings.Repeat("a", 1100) + `"}`, CodeDataTooLarge, ""},
		{`{"type":"send","user":"","data":1}`, CodeInvalidUser, ""},
		{`{"type":"send","user":"a\u0000b","data":1}`, CodeInvalidUser, ""},
		{`{"type":"subscribe","channel":"c","presence":"yes"}`, CodeInvalidFrame, ""},
		{`{"type":"subscribe","channel":"c","info":"` + strings.Repeat("i", 2000) + `"}`, CodeInfoTooLarge, ""},
		{`{"type":"subscribe","channel":"c","recover":{"offset":-1,"epoch":"e"}}`, CodeInvalidRecover, ""},
		{`{"type":"subscribe","channel":"c","recover":{"offset":1}}`, CodeInvalidRecover, ""},
		{`{"type":"subscribe","channel":"c","recover":7,"id":1}`, CodeInvalidRecover, "1"},
		{`{"type":"history","channel":"c","since":1.5}`, CodeInvalidFrame, ""},
		{`{"type":"history","channel":"c","limit":0}`, CodeInvalidFrame, ""},
		{`{"type":"presence","channel":"c","after":7}`, CodeInvalidFrame, ""},
		{`{"type":"presence","channel":"c","limit":-1}`, CodeInvalidFrame, ""},
		{`{"type":"message","channel":"c","data":1,"expect_offset":"3"}`, CodeInvalidFrame, ""},
		{`{"type":"presence"}`, CodeInvalidChannel, ""},
	}
	for _, tc := range cases {
		cmd, perr := DecodeCommand([]byte(tc.frame), testLimits)
		if perr == nil {
			t.Errorf("%s: accepted as %v", tc.frame, cmd)
			continue
		}
		if perr.Code != tc.code || string(perr.ID) != tc.id || perr.Text == "" {
			t.Errorf("%s: got %+v, want code %s id %s", tc.frame, perr, tc.code, tc.id)
		}
	}
}

func TestValidChannel(t *testing.T) {
	for name, want := range map[string]bool{
		"lobby:42": true, "a": true, strings.Repeat("x", 255): true, "A-Z_a.z:0@9/=": true,
		"": false, strings.Repeat("x", 256): false, "a b": false, "a*": false, "ü": false, "a\n": false,
	} {
		if ValidChannel(name) != want {
			t.Errorf("ValidChannel(%q) = %v", name, !want)
		}
	}
}

// FuzzDecodeCommand: no input panics, and what is accepted is well formed.
func FuzzDecodeCommand(f *testing.F) {
	for _, seed := range []string{
		`{"type":"subscribe","channel":"chat:1","id":1}`,
		`{"type":"message","channel":"c","data":{"a":[1,"x",null]},"id":"s"}`,
		`{"type":"send","user":"bob","data":"hi"}`,
		`{"type":"ping"}`, `[]`, `{"type":7}`, `{"type":"message","data":1e999}`,
		"{\"type\":\"subscribe\",\"channel\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		cmd, perr := DecodeCommand(frame, testLimits)
		if perr != nil {
			if perr.Code == "" || perr.Text == "" {
				t.Fatalf("error without code or text: %+v", perr)
			}
			if !json.Valid(FramePayload(ErrorFrame(perr.Code, perr.Text, perr.ID))) {
				t.Fatalf("error frame for %q is not JSON", frame)
			}
			return
		}
		switch cmd.Kind {
		case pb.ClientCommand_KIND_SUBSCRIBE, pb.ClientCommand_KIND_UNSUBSCRIBE:
			if !ValidChannel(cmd.Channel) {
				t.Fatalf("accepted channel %q", cmd.Channel)
			}
		case pb.ClientCommand_KIND_PUBLISH:
			if !ValidChannel(cmd.Channel) || !json.Valid(cmd.Data) || len(cmd.Data) > testLimits.MaxDataBytes {
				t.Fatalf("accepted publish %v", cmd)
			}
			frame := MessageFrame(cmd.Channel, "u", cmd.Data, 1, "e", 1)
			if !json.Valid(FramePayload(frame)) {
				t.Fatalf("message frame for %q is not JSON", frame)
			}
		}
		if len(cmd.Id) > 0 && !json.Valid(cmd.Id) {
			t.Fatalf("accepted id %q", cmd.Id)
		}
	})
}

func BenchmarkDecodePublish(b *testing.B) {
	frame := []byte(`{"type":"message","channel":"game:lobby:42","data":{"x":12,"y":7,"seq":991},"id":17}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, perr := DecodeCommand(frame, testLimits); perr != nil {
			b.Fatal(perr)
		}
	}
}
