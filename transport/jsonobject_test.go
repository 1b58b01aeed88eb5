package transport

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzSplitFrameMatchesEncodingJSON: the fast path reads every client frame
// it takes exactly as encoding/json does, member values and strings alike.
func FuzzSplitFrameMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"type":"message","channel":"game:lobby:42","data":{"x":12,"y":[7,"]}"]},"id":17}`,
		` { "TYPE" : "subscribe" , "Channel":"a", "channel":"b", "presence":true, "info":null } `,
		`{"type":"send","user":"b\u00f6b","data":"say \"hi\"\\","token":"x"}`,
		`{"t\u0079pe":"ping","expect_offset":12,"since":0,"limit":1e3,"recover":{"offset":1,"epoch":"e"}}`,
		`{"ſince":1,"data":[[],{},[{"a":"}"}]]}`, "{\"user\":\"\xff\",\"id\":-0.5e-3}", `{}`, `{"":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		trimmed := bytes.TrimLeft(frame, " \t\r\n")
		if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(frame) {
			return
		}
		var want clientFrame
		if err := json.Unmarshal(frame, &want); err != nil {
			t.Fatalf("encoding/json refused valid object %q: %v", frame, err)
		}
		var got clientFrame
		if !splitFrame(frame, &got) {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %q:\n split   %+v\n decoded %+v", frame, got, want)
		}
		for _, member := range []json.RawMessage{got.Type, got.Channel, got.User, got.Token, got.Data} {
			gotText, gotOK := decodeString(member)
			var wantText string
			wantOK := len(member) > 0 && member[0] == '"' && json.Unmarshal(member, &wantText) == nil
			if gotOK != wantOK || gotText != wantText {
				t.Fatalf("string %q: decoded %q %v, encoding/json %q %v", member, gotText, gotOK, wantText, wantOK)
			}
		}
	})
}

func TestSplitFrameLeavesEscapedNamesToEncodingJSON(t *testing.T) {
	for _, frame := range []string{`{"t\u0079pe":"ping"}`, `{"tÿpe":"ping"}`} {
		var f clientFrame
		if splitFrame([]byte(frame), &f) {
			t.Errorf("split %s itself", frame)
		}
	}
	cmd, perr := DecodeCommand([]byte(`{"t\u0079pe":"message","channel":"c","data":1}`), testLimits)
	if perr != nil || cmd.Channel != "c" || string(cmd.Data) != "1" {
		t.Fatalf("escaped member name: %v %v", cmd, perr)
	}
}

func TestDecodedCommandOutlivesTheFrame(t *testing.T) {
	frame := []byte(`{"type":"message","channel":"c","data":{"n":1},"id":"a"}`)
	cmd, perr := DecodeCommand(frame, testLimits)
	if perr != nil {
		t.Fatal(perr)
	}
	for i := range frame {
		frame[i] = 'x' // the read buffer is reused for the next frame
	}
	if string(cmd.Data) != `{"n":1}` || string(cmd.Id) != `"a"` {
		t.Fatalf("command changed with the frame: data %s id %s", cmd.Data, cmd.Id)
	}
	cmd.Id = append(cmd.Id, "zz"...)
	if string(cmd.Data) != `{"n":1}` {
		t.Fatalf("appending to the id overwrote the data: %s", cmd.Data)
	}
}
