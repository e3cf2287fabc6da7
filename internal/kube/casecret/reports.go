package casecret

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Each replica's proxies' certificate reports (which issuer signed each
// proxy's certificate, which roots it trusts) are in a ConfigMap of the
// control plane's namespace, one per replica, rewritten when they change
// and at least every ReportRefresh. Retiring a root checks every replica's
// reports, not only the proxies of the replica that takes the request.
const (
	// LabelReports marks the reports' ConfigMaps.
	LabelReports = "trellis.dev/proxy-certs"
	// ReportRefresh: a replica rewrites its reports at least this often.
	ReportRefresh = 30 * time.Second
	// ReportStale: reports older than this are a gone replica's (its
	// proxies reconnect elsewhere and are reported there); they are
	// ignored, and the Lease holder deletes them after ReportExpire.
	ReportStale  = 2 * time.Minute
	ReportExpire = 10 * time.Minute

	reportsPrefix = "trellis-proxy-certs-"
	keyCerts      = "certs.json"
	keyUpdated    = "updated"
)

func (s *Share) reportInformer() informers.SharedInformerFactory {
	f := informers.NewSharedInformerFactoryWithOptions(s.client, 10*time.Minute, informers.WithNamespace(s.ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelReports + "=true" }))
	inf := f.Core().V1().ConfigMaps().Informer()
	s.reports = inf.GetStore()
	return f
}

func (s *Share) reportsSynced(f informers.SharedInformerFactory) cache.InformerSynced {
	return f.Core().V1().ConfigMaps().Informer().HasSynced
}

// reportName is this replica's ConfigMap: its identity made a DNS name.
func (s *Share) reportName() string {
	var b strings.Builder
	for _, r := range strings.ToLower(s.who) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	name := reportsPrefix + strings.Trim(b.String(), "-.")
	if len(name) > 253 {
		name = name[:253]
	}
	return name
}

// Report writes this replica's proxies' reports (JSON, opaque here)
// when they changed since the last write, or when that write is
// ReportRefresh old.
func (s *Share) Report(ctx context.Context, b []byte) error {
	name := s.reportName()
	cms := s.client.CoreV1().ConfigMaps(s.ns)
	now := time.Now().UTC()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns, Labels: map[string]string{LabelManagedBy: "trellis", LabelReports: "true"}},
		Data:       map[string]string{keyCerts: string(b), keyUpdated: now.Format(time.RFC3339)},
	}
	var cur *corev1.ConfigMap
	if s.reports != nil {
		if item, ok, _ := s.reports.GetByKey(s.ns + "/" + name); ok {
			cur = item.(*corev1.ConfigMap)
		}
	}
	if cur == nil {
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return reportErr(err)
		}
		if cur, err = cms.Get(ctx, name, metav1.GetOptions{}); err != nil {
			return reportErr(err)
		}
	}
	if updated, err := time.Parse(time.RFC3339, cur.Data[keyUpdated]); err == nil &&
		cur.Data[keyCerts] == string(b) && now.Sub(updated) < ReportRefresh {
		return nil
	}
	cm.ResourceVersion = cur.ResourceVersion
	_, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
	return reportErr(err)
}

func reportErr(err error) error {
	if err != nil {
		return fmt.Errorf("casecret: write the proxies' certificate reports: %w", err)
	}
	return nil
}

// Others returns the other replicas' reports as each wrote them, leaving
// out stale ones (ReportStale).
func (s *Share) Others() [][]byte {
	if s.reports == nil {
		return nil
	}
	var out [][]byte
	for _, item := range s.reports.List() {
		cm := item.(*corev1.ConfigMap)
		if cm.Name == s.reportName() || reportAge(cm) > ReportStale {
			continue
		}
		out = append(out, []byte(cm.Data[keyCerts]))
	}
	return out
}

// CollectReports deletes the reports of replicas gone for ReportExpire
// (the Lease holder runs it).
func (s *Share) CollectReports(ctx context.Context) {
	if s.reports == nil {
		return
	}
	for _, item := range s.reports.List() {
		cm := item.(*corev1.ConfigMap)
		if reportAge(cm) <= ReportExpire {
			continue
		}
		err := s.client.CoreV1().ConfigMaps(s.ns).Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &cm.ResourceVersion}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			s.log.Warn("a gone replica's proxy certificate reports not deleted", "configmap", cm.Name, "err", err)
		}
	}
}

func reportAge(cm *corev1.ConfigMap) time.Duration {
	t, err := time.Parse(time.RFC3339, cm.Data[keyUpdated])
	if err != nil {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(t)
}
