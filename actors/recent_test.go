package actors

import (
	"bytes"
	"testing"
	"time"
)

// A channel without history keeps its latest publications for a
// successor: those of the last recentWindow, within recentBytes.
func TestRecentPublicationsAreBoundedByAgeAndSize(t *testing.T) {
	now := time.Now()
	var r recentPublications
	r.add(stored{offset: 1, at: now.Add(-recentWindow - time.Second), frame: []byte("old")})
	r.add(stored{offset: 2, at: now, frame: []byte("new")})
	if got := r.trim(); len(got) != 1 || got[0].offset != 2 || r.bytes != 3 {
		t.Fatalf("after an expired one: %+v (%d bytes), want only offset 2", got, r.bytes)
	}

	big := bytes.Repeat([]byte("x"), recentBytes/4+1)
	for offset := uint64(3); offset <= 10; offset++ {
		r.add(stored{offset: offset, at: now, frame: big})
	}
	got := r.trim()
	if r.bytes > recentBytes {
		t.Fatalf("%d bytes kept, more than %d", r.bytes, recentBytes)
	}
	if len(got) != 3 || got[0].offset != 8 || got[2].offset != 10 {
		t.Fatalf("kept offsets %d..%d (%d of them), want the latest three, 8..10", got[0].offset, got[len(got)-1].offset, len(got))
	}

	again := recentFrom(got)
	if again.bytes != r.bytes || len(again.list) != 3 {
		t.Fatalf("recentFrom counted %d bytes in %d, want %d in 3", again.bytes, len(again.list), r.bytes)
	}
}
