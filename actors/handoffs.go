package actors

import (
	"sync"
	"time"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// handoffs keeps the state of channel activations that stopped, until a
// successor takes it (through this node's relay) or handoffMemory passes.
// A grain stops on its old node movedLinger after the member list moves
// it, sometimes before the successor has asked, and a channel that
// passivates may have answered publications whose retries are on the way;
// without this the channel's epoch, history and answers would end there.
type handoffs struct {
	mu     sync.Mutex
	states map[string]handoff // channel → its last state here
	kept   int
}

type handoff struct {
	term  uint64 // of the activation that left it
	state *pb.ChannelState
	at    time.Time
}

// handoffMemory is how long a moved channel's state waits for its successor.
const handoffMemory = 30 * time.Second

func (h *handoffs) keep(channel string, term uint64, state *pb.ChannelState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.states == nil {
		h.states = map[string]handoff{}
	}
	now := time.Now()
	if h.kept++; h.kept%256 == 0 {
		for name, old := range h.states {
			if now.Sub(old.at) > handoffMemory {
				delete(h.states, name)
			}
		}
	}
	h.states[channel] = handoff{term: term, state: state, at: now}
}

// holds reports whether a state left by an activation placed under term
// or an older one waits (an activation under the same term is one that
// passivated here).
func (h *handoffs) holds(channel string, term uint64) (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.states[channel]
	if !ok || s.term > term || time.Since(s.at) > handoffMemory {
		return 0, false
	}
	return s.term, true
}

// take hands the waiting state to the activation of term, once.
func (h *handoffs) take(channel string, term uint64) *pb.ChannelState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.states[channel]
	if !ok || s.term > term || time.Since(s.at) > handoffMemory {
		return nil
	}
	delete(h.states, channel)
	return s.state
}
