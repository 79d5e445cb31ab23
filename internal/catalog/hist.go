package catalog

// Log2Slots is the number of slots of an in-kernel histogram
// (MAX_SLOTS in bpf/common/hist.bpf.h).
const Log2Slots = 27

// Histogram is a log2 distribution with its percentiles.
type Histogram struct {
	Title string `json:"title"`
	// Unit of the bucket bounds: "ns", "us", "bytes", "pages".
	Unit    string   `json:"unit"`
	Buckets []Bucket `json:"buckets"`
	Count   uint64   `json:"count"`
	P50     uint64   `json:"p50"`
	P90     uint64   `json:"p90"`
	P99     uint64   `json:"p99"`
}

// Bucket counts values in [Low, High].
type Bucket struct {
	Low   uint64 `json:"low"`
	High  uint64 `json:"high"`
	Count uint64 `json:"count"`
}

// Log2Histogram turns in-kernel slots (slot i counts [2^i, 2^(i+1)), slot 0
// also zero) into a histogram, trimming empty slots at both ends.
func Log2Histogram[T ~uint32 | ~uint64](title, unit string, slots []T) Histogram {
	h := Histogram{Title: title, Unit: unit}
	first, last := -1, -1
	for i, c := range slots {
		if c != 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
		h.Count += uint64(c)
	}
	if first < 0 {
		return h
	}
	for i := first; i <= last; i++ {
		low, high := uint64(0), uint64(1)
		if i > 0 {
			low, high = uint64(1)<<i, uint64(1)<<(i+1)-1
		}
		h.Buckets = append(h.Buckets, Bucket{Low: low, High: high, Count: uint64(slots[i])})
	}
	h.P50, h.P90, h.P99 = h.Percentile(50), h.Percentile(90), h.Percentile(99)
	return h
}

// Percentile estimates the p-th percentile, interpolating linearly inside
// the bucket that holds it (log2 buckets only bound it within a factor of two).
func (h Histogram) Percentile(p float64) uint64 {
	if h.Count == 0 {
		return 0
	}
	rank := p / 100 * float64(h.Count)
	var cum float64
	for _, b := range h.Buckets {
		if b.Count == 0 {
			continue
		}
		next := cum + float64(b.Count)
		if rank <= next {
			frac := (rank - cum) / float64(b.Count)
			return b.Low + uint64(frac*float64(b.High-b.Low))
		}
		cum = next
	}
	return h.Buckets[len(h.Buckets)-1].High
}

// AddSlots adds src into dst, slot by slot (merging per-CPU or per-key
// histograms).
func AddSlots[T ~uint32 | ~uint64](dst []uint64, src []T) {
	for i := range src {
		if i < len(dst) {
			dst[i] += uint64(src[i])
		}
	}
}
