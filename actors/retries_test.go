package actors

import (
	"testing"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// A connection pipelines publications, so the retry of a slow one arrives
// after later ones were answered: it must still be recognised.
func TestRetriesRecogniseAnyPipelinedSequence(t *testing.T) {
	var r retries
	for seq := uint64(1); seq <= maxPipelined; seq++ {
		r.remember("conn", seq, &pb.Published{Offset: 100 + seq, Sequence: seq})
	}
	for seq := uint64(1); seq <= maxPipelined; seq++ {
		answer, done := r.answered("conn", seq)
		if !done {
			t.Fatalf("retry of sequence %d after %d later ones was not recognised", seq, maxPipelined-seq)
		}
		if got := answer.(*pb.Published).Offset; got != 100+seq {
			t.Fatalf("retry of sequence %d answered with offset %d, want %d", seq, got, 100+seq)
		}
	}
	if _, done := r.answered("conn", maxPipelined+1); done {
		t.Fatal("a sequence never answered was taken for a retry")
	}
	if _, done := r.answered("other", 1); done {
		t.Fatal("another requester's sequence was taken for a retry")
	}
}

func TestRetriesForgetBeyondTheWindow(t *testing.T) {
	var r retries
	for seq := uint64(1); seq <= retryWindow+1; seq++ {
		r.remember("conn", seq, &pb.Published{Offset: seq})
	}
	if _, done := r.answered("conn", 1); done {
		t.Fatal("sequence 1 is still remembered after a whole window of later ones")
	}
	if _, done := r.answered("conn", retryWindow+1); !done {
		t.Fatal("the latest sequence is forgotten")
	}
}

func TestRetriesIgnoreUnnumberedRequests(t *testing.T) {
	var r retries
	r.remember("", 1, &pb.Published{})
	r.remember("conn", 0, &pb.Published{})
	if _, done := r.answered("conn", 0); done {
		t.Fatal("an unnumbered request was taken for a retry")
	}
}
