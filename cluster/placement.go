package cluster

import (
	"slices"
	"sort"
)

// PlacementScheme names how members rank grains. Every member of a
// cluster must use the same one, or two of them may both believe they own
// a grain; a node refuses to join members that declare another.
const PlacementScheme = "rendezvous-fnv64-mix"

// Placement ranks the members that own grains for each identity by
// rendezvous hashing: every member scores every identity, the highest
// score owns it and the next ones keep its replicas, so a member that
// joins or leaves moves only the grains it gains or loses.
//
// A score mixes the identity's hash with the member's through a 64-bit
// finalizer. protoactor's disthash scores FNV-1a of identity and address
// written one after the other, whose last bytes barely mix: of three
// members at 127.0.0.1:7001, :7002 and :7003 one owned half of all grains.
type Placement struct {
	addresses []string // sorted, so ties go the same way everywhere
	weights   []uint64 // mixed hash of each address
}

// NewPlacement places grains on the members at addresses.
func NewPlacement(addresses []string) *Placement {
	sorted := slices.Clone(addresses)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	p := &Placement{addresses: sorted, weights: make([]uint64, len(sorted))}
	for i, address := range sorted {
		p.weights[i] = mix64(fnv64a(address))
	}
	return p
}

// Owner is the address of the member that owns identity; empty when there
// are no members.
func (p *Placement) Owner(identity string) string {
	if len(p.addresses) == 0 {
		return ""
	}
	key := fnv64a(identity)
	best, bestScore := 0, mix64(key^p.weights[0])
	for i := 1; i < len(p.addresses); i++ {
		if score := mix64(key ^ p.weights[i]); score > bestScore {
			best, bestScore = i, score
		}
	}
	return p.addresses[best]
}

// Ranked is every member's address, the owner of identity first, then
// the members that own it next, in order.
func (p *Placement) Ranked(identity string) []string {
	key := fnv64a(identity)
	scores := make([]uint64, len(p.addresses))
	order := make([]int, len(p.addresses))
	for i := range p.addresses {
		scores[i], order[i] = mix64(key^p.weights[i]), i
	}
	// Equal scores keep the sorted addresses' order.
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	ranked := make([]string, len(order))
	for i, member := range order {
		ranked[i] = p.addresses[member]
	}
	return ranked
}

// fnv64a is the 64-bit FNV-1a hash of s.
func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is SplitMix64's finalizer: every input bit flips about half of
// the output bits, which FNV's last multiplications alone do not.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
