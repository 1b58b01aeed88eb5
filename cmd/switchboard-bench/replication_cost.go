package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// w4Run is one W4 run and what its nodes reported.
type w4Run struct {
	res   fanoutResult
	nodes nodeFigures
}

// runReplicationCost is W4 with replication off and on, pairs times, in
// one invocation: the order alternates from pair to pair so a machine
// that speeds up or slows down during the run favours neither. A single
// pair moves too much on a small VM to say anything; the median of the
// pairs' ratios is the figure.
func runReplicationCost(opts w4Options, cfg fanoutConfig, pairs int) error {
	fmt.Println("| pair | deliveries/s, off | on | on / off | p99, off | on | CPU per publication, off | on | frames per write, off | on | lost / dup / reordered |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	var ratios, added []float64
	for pair := 1; pair <= pairs; pair++ {
		order := []int{0, 1}
		if pair%2 == 0 {
			order = []int{1, 0}
		}
		var runs [2]w4Run
		for _, replicas := range order {
			o := opts
			o.replicas = replicas
			res, nodes, err := runW4(o, cfg)
			if err != nil {
				return fmt.Errorf("pair %d, --channel-replicas=%d: %w", pair, replicas, err)
			}
			runs[replicas] = w4Run{res, nodes}
		}
		off, on := runs[0], runs[1]
		ratio := on.res.DeliveriesPerSecond() / off.res.DeliveriesPerSecond()
		ratios = append(ratios, ratio)
		added = append(added, (on.res.P99 - off.res.P99).Seconds())
		fmt.Printf("| %d | %.0f | %.0f | %.2f | %s | %s | %.1f µs | %.1f µs | %.2f | %.2f | %d / %d / %d |\n", pair,
			off.res.DeliveriesPerSecond(), on.res.DeliveriesPerSecond(), ratio,
			off.res.P99.Round(time.Millisecond), on.res.P99.Round(time.Millisecond),
			off.nodes.cpuPerPublication(off.res.Published), on.nodes.cpuPerPublication(on.res.Published),
			off.nodes.framesPerWrite(), on.nodes.framesPerWrite(),
			off.res.Lost+on.res.Lost, off.res.Duplicated+on.res.Duplicated, off.res.Reorders+on.res.Reorders)
	}
	fmt.Printf("\nW4 replication on / off over %d pairs: median %.2f, geometric mean %.2f, range %.2f–%.2f; p99 added, median %s\n",
		pairs, median(ratios), geometricMean(ratios), slices.Min(ratios), slices.Max(ratios),
		time.Duration(median(added)*float64(time.Second)).Round(time.Millisecond))
	return nil
}

func median(values []float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func geometricMean(values []float64) float64 {
	sum := 0.0
	for _, v := range values {
		sum += math.Log(v)
	}
	return math.Exp(sum / float64(len(values)))
}
