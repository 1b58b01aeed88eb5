package main

import (
	"math"
	"testing"
)

func TestMedianAndGeometricMeanOfPairRatios(t *testing.T) {
	for _, c := range []struct {
		ratios          []float64
		median, geomean float64
	}{
		{[]float64{0.8}, 0.8, 0.8},
		{[]float64{1.2, 0.5, 0.9}, 0.9, math.Cbrt(1.2 * 0.5 * 0.9)},
		{[]float64{2, 0.5, 1, 0.7}, 0.85, math.Sqrt(math.Sqrt(2 * 0.5 * 1 * 0.7))},
	} {
		if got := median(c.ratios); math.Abs(got-c.median) > 1e-9 {
			t.Errorf("median(%v) = %v, want %v", c.ratios, got, c.median)
		}
		if got := geometricMean(c.ratios); math.Abs(got-c.geomean) > 1e-9 {
			t.Errorf("geometricMean(%v) = %v, want %v", c.ratios, got, c.geomean)
		}
	}
}
