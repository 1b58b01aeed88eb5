package actors

import (
	"time"

	"google.golang.org/protobuf/proto"
)

// retries remembers the last request of each requester so that a request
// retried after a lost answer is answered again, not carried out twice.
// A requester's requests are sequential, so the last one is all it takes.
type retries struct {
	last       map[string]retryRecord
	sinceSweep int
}

type retryRecord struct {
	sequence uint64
	answer   proto.Message
	at       time.Time
}

// retryMemory is how long an answer is kept for a retry; far beyond the
// longest request timeout.
const retryMemory = time.Minute

// answered returns the answer already given to requester's request sequence.
func (r *retries) answered(requester string, sequence uint64) (proto.Message, bool) {
	if requester == "" || sequence == 0 {
		return nil, false
	}
	rec, ok := r.last[requester]
	if !ok || rec.sequence != sequence {
		return nil, false
	}
	return rec.answer, true
}

func (r *retries) remember(requester string, sequence uint64, answer proto.Message) {
	if requester == "" || sequence == 0 {
		return
	}
	if r.last == nil {
		r.last = map[string]retryRecord{}
	}
	now := time.Now()
	r.last[requester] = retryRecord{sequence: sequence, answer: answer, at: now}
	if r.sinceSweep++; r.sinceSweep >= 1024 {
		r.sinceSweep = 0
		for k, rec := range r.last {
			if now.Sub(rec.at) > retryMemory {
				delete(r.last, k)
			}
		}
	}
}
