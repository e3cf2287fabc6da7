// Command evaldetect runs the anomaly detectors' evaluation at full scale
// (make eval-detect): a simulated mesh of 100 services for 7 days with
// labelled attacks, scored per attack class and per detector. It prints
// the tables as Markdown, for docs/learning.md.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry/anomaly/sim"
)

func main() {
	var o sim.Options
	flag.IntVar(&o.Services, "services", 100, "services in the simulated mesh")
	flag.IntVar(&o.Days, "days", 7, "simulated days, the first of them the learning window")
	flag.IntVar(&o.AttacksPerKind, "attacks", 10, "attacks injected per class")
	flag.DurationVar(&o.Interval, "interval", time.Minute, "the stats interval")
	seed := flag.Uint64("seed", 1, "random seed")
	out := flag.String("o", "", "also write the Markdown to this file")
	flag.Parse()
	o.Seed = *seed
	res := sim.Run(o)
	w := io.Writer(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "evaldetect:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	write(w, res)
	for _, c := range res.Classes {
		if c.Recall < 0.9 {
			defer os.Exit(1)
		}
	}
	if res.FalsePerDay > 5 {
		defer os.Exit(1)
	}
}

func write(w io.Writer, r sim.Result) {
	o := r.Options
	fmt.Fprintf(w, "Simulated: %d services in %d namespaces, %d days (the first %s learning), stats every %s, %d attacks per class, seed %d; %d alerts in all; run in %s.\n\n",
		o.Services, o.Namespaces, o.Days, o.LearningWindow, o.Interval, o.AttacksPerKind, o.Seed, r.Alerts, r.Elapsed.Round(time.Second))
	fmt.Fprintln(w, "| attack class | attacks | detected | recall | time to detect, median (max), stats intervals |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, c := range r.Classes {
		fmt.Fprintf(w, "| %s | %d | %d | %.2f | %.0f (%.0f) |\n", c.Kind, c.Attacks, c.Detected, c.Recall, c.MedianDetect, c.MaxDetect)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| detector | alerts | about an attack | precision |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, d := range r.Detectors {
		p := "-"
		if !math.IsNaN(d.Precision) {
			p = fmt.Sprintf("%.2f", d.Precision)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s |\n", d.Detector, d.Alerts, d.True, p)
	}
	fmt.Fprintf(w, "\nFalse alerts (about no attack): %.2f per simulated day after the learning window.\n", r.FalsePerDay)
	for _, m := range r.Missed {
		fmt.Fprintf(w, "\nMissed: %s", m)
	}
	if len(r.Missed) > 0 {
		fmt.Fprintln(w)
	}
}
