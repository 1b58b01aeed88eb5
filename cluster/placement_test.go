package cluster

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// Members get even shares of the grains, and of the replicas each one
// keeps for each other, however alike their addresses: one host's
// consecutive ports, neighbouring IPs, numbered host names.
func TestPlacementSharesGrainsEvenly(t *testing.T) {
	const identities = 30000
	for _, addresses := range [][]string{
		{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"},
		{"10.0.1.5:8000", "10.0.1.6:8000", "10.0.1.7:8000"},
		{"node-1:7000", "node-2:7000", "node-3:7000", "node-4:7000"},
		{"127.0.0.1:41000", "127.0.0.1:41001"},
	} {
		t.Run(addresses[0], func(t *testing.T) {
			p := NewPlacement(addresses)
			owned := map[string]int{}
			replicated := map[[2]string]int{} // owner, next
			for i := range identities {
				ranked := p.Ranked(fmt.Sprintf("room:%d", i))
				owned[ranked[0]]++
				replicated[[2]string{ranked[0], ranked[1]}]++
			}
			n := len(addresses)
			for _, a := range addresses {
				checkShare(t, "grains owned by "+a, owned[a], identities, 1/float64(n))
			}
			for _, owner := range addresses {
				for _, next := range addresses {
					if owner != next {
						checkShare(t, "replicas of "+owner+"'s grains on "+next, replicated[[2]string{owner, next}], identities,
							1/float64(n*(n-1)))
					}
				}
			}
		})
	}
}

// checkShare fails when got of total strays from share by more than five
// standard deviations of a fair draw.
func checkShare(t *testing.T, what string, got, total int, share float64) {
	t.Helper()
	want := share * float64(total)
	if tolerance := 5 * math.Sqrt(want*(1-share)); math.Abs(float64(got)-want) > tolerance {
		t.Errorf("%s: %d of %d, want %.0f ± %.0f", what, got, total, want, tolerance)
	}
}

// Every node computes the same owner from the same members, whatever
// order it learnt them in; the owner is the first of the ranking.
func TestPlacementIsTheSameOnEveryNode(t *testing.T) {
	addresses := []string{"10.0.0.3:7000", "10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.4:7000"}
	reordered := []string{"10.0.0.4:7000", "10.0.0.2:7000", "10.0.0.1:7000", "10.0.0.3:7000", "10.0.0.2:7000"}
	a, b := NewPlacement(addresses), NewPlacement(reordered)
	for i := range 1000 {
		id := fmt.Sprintf("doc:%d", i)
		ra, rb := a.Ranked(id), b.Ranked(id)
		if !slices.Equal(ra, rb) {
			t.Fatalf("%s ranked %v by one node and %v by another", id, ra, rb)
		}
		if owner := a.Owner(id); owner != ra[0] || len(ra) != 4 {
			t.Fatalf("%s: owner %s, ranking %v", id, owner, ra)
		}
	}
	if empty := NewPlacement(nil); empty.Owner("x") != "" || len(empty.Ranked("x")) != 0 {
		t.Fatal("with no members, no one owns anything")
	}
}

// A member that joins takes only grains it now owns, about its share; one
// that leaves gives up only its own, and each goes to the member that kept
// its replica.
func TestPlacementMovesOnlyWhatAMemberGainsOrLoses(t *testing.T) {
	before := NewPlacement([]string{"a:1", "b:1", "c:1"})
	joined := NewPlacement([]string{"a:1", "b:1", "c:1", "d:1"})
	left := NewPlacement([]string{"a:1", "c:1"})
	const identities = 20000
	moved := 0
	for i := range identities {
		id := fmt.Sprintf("lobby:%d", i)
		was, ranked := before.Owner(id), before.Ranked(id)
		if now := joined.Owner(id); now != was {
			if now != "d:1" {
				t.Fatalf("%s moved from %s to %s when d:1 joined", id, was, now)
			}
			moved++
		}
		if now := left.Owner(id); was != "b:1" && now != was {
			t.Fatalf("%s moved from %s to %s when b:1 left", id, was, now)
		} else if was == "b:1" && now != ranked[1] {
			t.Fatalf("%s went to %s when its owner left, not to %s, which kept its replica", id, now, ranked[1])
		}
	}
	checkShare(t, "grains moved to the member that joined", moved, identities, 0.25)
}
