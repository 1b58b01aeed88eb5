package main

import (
	"fmt"
	"slices"
	"time"
)

// failoverReport is what the clients of a failover or rolling-restart run saw.
type failoverReport struct {
	// Publications: sent, answered published, answered outcome_unknown,
	// given up when their connection closed, refused otherwise, and
	// unanswered at the end; retries after unavailable or rate_limited.
	sent, acked, unknown, closedUnanswered, refused, unanswered int
	retries, publisherReconnects, skipped                       int
	// Publications not acknowledged that some subscriber received anyway.
	unackedDelivered int

	// Subscribers by what happened to them: never disconnected; reconnected
	// and recovered every channel; reconnected and refused recovery on some.
	stayed, recoveredAll, notRecoveredAll int
	// Acknowledged publications a subscriber never received, per class;
	// told: after the publication was sent, a gap frame on its channel
	// arrived or a subscribe to it was answered recovered:false.
	lostStayed, lostStayedTold           int
	lostRecovered                        int
	lostNotRecovered, lostNotRecoveredTd int
	duplicates, outOfOrder, gapFrames    int
	subscribeRefused                     int

	// Recovery: subscribes with recover, and how many were recovered:true;
	// reconnecting subscribers, and how many recovered every channel.
	recoveryAsks, recovered       int
	reconnecting, reconnectingAll int

	// Epochs: channels with more than one epoch, and epochs beyond the first.
	channelsNewEpoch, affectedNewEpoch, newEpochs int
	affected                                      int

	// Windows: disruption to the first acknowledged publication sent after
	// it, per affected channel (never: no such publication).
	windows []time.Duration
	never   int
	// Longest time between acknowledgements on a channel from the
	// disruption to the end of publishing, affected and other channels.
	stallAffected, stallOther time.Duration
}

func analyze(l *failoverLoad, affected map[string]bool, disruptAt, publishEnd time.Time, reconnectingClass func(*failoverSubscriber) bool) failoverReport {
	var r failoverReport
	records := l.ledger.snapshot()
	acksByChannel := map[string][]time.Time{}
	firstAfter := map[string]time.Time{}
	for _, p := range records {
		r.sent++
		switch p.outcome {
		case "published":
			r.acked++
			acksByChannel[p.channel] = append(acksByChannel[p.channel], p.ackedAt)
			if !p.firstSent.Before(disruptAt) {
				if f, ok := firstAfter[p.channel]; !ok || p.ackedAt.Before(f) {
					firstAfter[p.channel] = p.ackedAt
				}
			}
		case "outcome_unknown":
			r.unknown++
		case "connection closed":
			r.closedUnanswered++
		case "":
			r.unanswered++
		default:
			r.refused++
		}
		r.retries += p.attempts - 1
	}
	for _, p := range l.pubs {
		p.mu.Lock()
		r.publisherReconnects += p.reconnects
		r.skipped += p.skipped
		p.mu.Unlock()
	}
	for ch, hit := range affected {
		if hit {
			r.affected++
			if f, ok := firstAfter[ch]; ok {
				r.windows = append(r.windows, f.Sub(disruptAt))
			} else {
				r.never++
			}
		}
		stall := longestStall(acksByChannel[ch], disruptAt, publishEnd)
		if hit {
			r.stallAffected = max(r.stallAffected, stall)
		} else {
			r.stallOther = max(r.stallOther, stall)
		}
	}
	slices.Sort(r.windows)

	delivered := map[string]bool{}
	for _, s := range l.subs {
		s.mu.Lock()
		for key := range s.seen {
			delivered[key] = true
		}
		s.mu.Unlock()
	}
	for _, p := range records {
		if p.outcome != "published" && delivered[p.key] {
			r.unackedDelivered++
		}
	}
	for _, s := range l.subs {
		s.mu.Lock()
		told := func(p pubRecord) bool {
			for _, at := range s.told[p.channel] {
				if !at.Before(p.firstSent) {
					return true
				}
			}
			return false
		}
		lost, lostTold := 0, 0
		for _, p := range records {
			if p.outcome != "published" || s.seen[p.key] > 0 {
				continue
			}
			lost++
			if told(p) {
				lostTold++
			}
		}
		for _, n := range s.seen {
			if n > 1 {
				r.duplicates += n - 1
			}
		}
		for _, g := range s.gaps {
			r.gapFrames += len(g)
		}
		r.outOfOrder += s.outOfOrder
		r.subscribeRefused += s.refused
		r.recoveryAsks += s.recoveryAsks
		r.recovered += s.recovered
		switch {
		case s.disconnects == 0:
			r.stayed++
			r.lostStayed += lost
			r.lostStayedTold += lostTold
		case s.notRecovered == 0 && s.refused == 0:
			r.recoveredAll++
			r.lostRecovered += lost
		default:
			r.notRecoveredAll++
			r.lostNotRecovered += lost
			r.lostNotRecoveredTd += lostTold
		}
		if s.disconnects > 0 && reconnectingClass(s) {
			r.reconnecting++
			if s.notRecovered == 0 && s.refused == 0 {
				r.reconnectingAll++
			}
		}
		s.mu.Unlock()
	}

	l.ledger.mu.Lock()
	for ch, epochs := range l.ledger.epochs {
		if len(epochs) > 1 {
			r.channelsNewEpoch++
			r.newEpochs += len(epochs) - 1
			if affected[ch] {
				r.affectedNewEpoch++
			}
		}
	}
	l.ledger.mu.Unlock()
	return r
}

// longestStall is the longest time without an acknowledgement between
// from and to, counting from from and up to to.
func longestStall(acks []time.Time, from, to time.Time) time.Duration {
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	longest, prev := time.Duration(0), from
	for _, at := range acks {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			break
		}
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return max(longest, to.Sub(prev))
}

func share(n, of int) string {
	if of == 0 {
		return fmt.Sprintf("%d of %d", n, of)
	}
	return fmt.Sprintf("%d of %d (%.0f %%)", n, of, 100*float64(n)/float64(of))
}

func replicasLabel(n int) string {
	if n < 0 {
		return "flag not passed"
	}
	return fmt.Sprintf("--channel-replicas=%d", n)
}

func printCommon(name string, cfg failoverConfig, r failoverReport) {
	row := func(figure, value string) { fmt.Printf("| %s | %s | %s |\n", name, figure, value) }
	row("publications sent / acknowledged", fmt.Sprintf("%d / %d", r.sent, r.acked))
	row("not acknowledged: outcome_unknown / connection closed first / refused / unanswered",
		fmt.Sprintf("%d / %d / %d / %d", r.unknown, r.closedUnanswered, r.refused, r.unanswered))
	row("not acknowledged but received by a subscriber", fmt.Sprint(r.unackedDelivered))
	row("retries after unavailable (same id) / publisher reconnects / ticks skipped (256 pending)",
		fmt.Sprintf("%d / %d / %d", r.retries, r.publisherReconnects, r.skipped))
	row(fmt.Sprintf("acknowledged lost (told by a gap or recovered:false) at the %d subscribers that stayed connected", r.stayed),
		fmt.Sprintf("%d (%d)", r.lostStayed, r.lostStayedTold))
	row(fmt.Sprintf("acknowledged lost at the %d reconnected subscribers that recovered every channel", r.recoveredAll),
		fmt.Sprint(r.lostRecovered))
	row(fmt.Sprintf("acknowledged lost (told by a gap or recovered:false) at the %d reconnected subscribers refused recovery on some channel", r.notRecoveredAll),
		fmt.Sprintf("%d (%d)", r.lostNotRecovered, r.lostNotRecoveredTd))
	row("duplicates received / out of order / gap frames", fmt.Sprintf("%d / %d / %d", r.duplicates, r.outOfOrder, r.gapFrames))
	row("channels whose epoch changed (epochs beyond the first)", fmt.Sprintf("%d of %d (%d)", r.channelsNewEpoch, cfg.Channels, r.newEpochs))
	row("recover answered recovered:true (per channel subscription)", share(r.recovered, r.recoveryAsks))
	row("reconnecting subscribers that recovered every channel", share(r.reconnectingAll, r.reconnecting))
	if r.subscribeRefused > 0 {
		row("subscribes refused for good", fmt.Sprint(r.subscribeRefused))
	}
}

func printFailover(cfg failoverConfig, victim int, r failoverReport) {
	fmt.Printf("failover: %d nodes, node %d SIGKILLed after %s of load, %s more; %d channels (%d owned by node %d), %.0f publications/s from %d publishers, %d subscribers per node; replicas: %s\n",
		cfg.Nodes, victim+1, cfg.Warmup, cfg.After, cfg.Channels, r.affected, victim+1, cfg.Rate, cfg.Publishers,
		cfg.SubscribersPerNode, replicasLabel(cfg.Replicas))
	fmt.Println("| scenario | figure | value |")
	fmt.Println("|---|---|---|")
	window := "none measured"
	if n := len(r.windows); n > 0 {
		window = fmt.Sprintf("min %s, median %s, max %s", r.windows[0].Round(time.Millisecond),
			r.windows[n/2].Round(time.Millisecond), r.windows[n-1].Round(time.Millisecond))
	}
	if r.never > 0 {
		window += fmt.Sprintf("; %d channels never", r.never)
	}
	fmt.Printf("| failover | window: kill → first acknowledged publication, node %d's %d channels | %s |\n", victim+1, r.affected, window)
	fmt.Printf("| failover | longest time without an acknowledgement after the kill: node %d's channels / the others | %s / %s |\n",
		victim+1, r.stallAffected.Round(time.Millisecond), r.stallOther.Round(time.Millisecond))
	fmt.Printf("| failover | channels of node %d whose epoch changed | %d of %d |\n", victim+1, r.affectedNewEpoch, r.affected)
	printCommon("failover", cfg, r)
}

func printRollingRestart(cfg failoverConfig, steps []restartStep, r failoverReport) {
	fmt.Printf("rolling-restart: %d nodes restarted in turn (SIGTERM, same ports), %s of load before, %s between, %s after; %d channels, %.0f publications/s from %d publishers, %d subscribers per node; replicas: %s\n",
		cfg.Nodes, cfg.Warmup, cfg.Pause, cfg.After, cfg.Channels, cfg.Rate, cfg.Publishers, cfg.SubscribersPerNode,
		replicasLabel(cfg.Replicas))
	fmt.Println("| scenario | figure | value |")
	fmt.Println("|---|---|---|")
	for _, s := range steps {
		fmt.Printf("| rolling-restart | node %d: SIGTERM → exit (status) / start → all members again | %s (%d) / %s |\n",
			s.node, s.stop.Round(time.Millisecond), s.status, s.rejoin.Round(time.Millisecond))
	}
	fmt.Printf("| rolling-restart | longest time without an acknowledgement on a channel during the restarts | %s |\n",
		r.stallAffected.Round(time.Millisecond))
	printCommon("rolling-restart", cfg, r)
}
