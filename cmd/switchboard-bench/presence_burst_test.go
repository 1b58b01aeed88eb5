package main

import "testing"

func TestPresenceViewIsCompleteWhenEveryMemberIsKnown(t *testing.T) {
	v := newPresenceView(3)
	v.join("pb0000")
	v.join("pb0000") // a page and an event may both name a member
	v.join("pb0002")
	v.join("alice")   // not a member
	v.join("pb0003")  // beyond the members
	v.join("pb00001") // not the member's spelling
	if v.complete() || v.size != 2 || v.strangers != 3 {
		t.Fatalf("size %d, strangers %d, complete %v", v.size, v.strangers, v.complete())
	}
	if m := v.missing(5); len(m) != 1 || m[0] != "pb0001" {
		t.Fatalf("missing %v, want [pb0001]", m)
	}
	v.join("pb0001")
	if !v.complete() {
		t.Fatal("all three joined, view not complete")
	}
	v.leave("pb0001")
	v.leave("pb0001")
	if v.complete() || v.size != 2 {
		t.Fatalf("after a leave: size %d, complete %v", v.size, v.complete())
	}
}

func TestFrameUserReadsJoinAndLeaveFrames(t *testing.T) {
	cases := []struct {
		frame string
		user  string
		ok    bool
	}{
		{`{"type":"join","channel":"c","user":"pb0007","info":{"user":"x"}}`, "pb0007", true},
		{`{"type":"leave","channel":"c","user":"pb0999"}`, "pb0999", true},
		{`{"type":"leave","channel":"c","user":"a\"b"}`, "", false},
		{`{"type":"join","channel":"c"}`, "", false},
	}
	for _, c := range cases {
		if u, ok := frameUser([]byte(c.frame)); u != c.user || ok != c.ok {
			t.Errorf("frameUser(%s) = %q, %v; want %q, %v", c.frame, u, ok, c.user, c.ok)
		}
	}
}
