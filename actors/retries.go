package actors

import (
	"time"

	"google.golang.org/protobuf/proto"
)

// retries remembers the answers given to each requester's recent requests
// so that a request retried after a lost or late answer is answered again,
// not carried out twice. A connection pipelines up to maxPipelined
// publications, so a retry may name any of its last maxPipelined
// sequences, not only the last one: each requester keeps its answers to
// sequences within retryWindow of its highest.
type retries struct {
	requesters map[string]*answeredWindow
	sinceSweep int
}

// answeredWindow is a requester's answers to its latest sequences: those
// within retryWindow of the highest. Most requesters have one or two
// requests in flight, so it stays small.
type answeredWindow struct {
	entries []answeredEntry
	highest uint64
	at      time.Time // of the latest answer
}

type answeredEntry struct {
	sequence uint64
	answer   proto.Message
}

// retryWindow covers every publication a connection can have in flight,
// with room for requests interleaved with them (subscribes, sends).
const retryWindow = 2 * maxPipelined

// retryMemory is how long a requester's answers are kept for a retry; far
// beyond the longest request timeout.
const retryMemory = time.Minute

// answered returns the answer already given to requester's request sequence.
func (r *retries) answered(requester string, sequence uint64) (proto.Message, bool) {
	if requester == "" || sequence == 0 {
		return nil, false
	}
	w := r.requesters[requester]
	if w == nil {
		return nil, false
	}
	for _, e := range w.entries {
		if e.sequence == sequence {
			return e.answer, true
		}
	}
	return nil, false
}

func (r *retries) remember(requester string, sequence uint64, answer proto.Message) {
	if requester == "" || sequence == 0 {
		return
	}
	if r.requesters == nil {
		r.requesters = map[string]*answeredWindow{}
	}
	now := time.Now()
	w := r.requesters[requester]
	if w == nil {
		w = &answeredWindow{}
		r.requesters[requester] = w
	}
	w.highest, w.at = max(w.highest, sequence), now
	kept := w.entries[:0]
	for _, e := range w.entries {
		if e.sequence+retryWindow > w.highest {
			kept = append(kept, e)
		}
	}
	w.entries = append(kept, answeredEntry{sequence, answer})
	if r.sinceSweep++; r.sinceSweep >= 1024 {
		r.sinceSweep = 0
		for k, w := range r.requesters {
			if now.Sub(w.at) > retryMemory {
				delete(r.requesters, k)
			}
		}
	}
}

// each calls f with every remembered answer, for a grain handing its
// state to its successor.
func (r *retries) each(f func(requester string, answer any)) {
	for requester, w := range r.requesters {
		for _, e := range w.entries {
			f(requester, e.answer)
		}
	}
}
