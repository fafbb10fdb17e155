package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	backhaulv1alpha1 "backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

var (
	_ Authenticator = (*TokenReviewer)(nil)
	_ Authorizer    = (*SubjectAccessReviewer)(nil)
)

// TokenReviewer authenticates bearer tokens with a TokenReview on the hub's
// host cluster, so callers can use service-account or OIDC tokens the host
// already trusts.
type TokenReviewer struct {
	client    kubernetes.Interface
	audiences []string
	cache     *reviewCache[tokenResult]
}

type tokenResult struct {
	user   *User
	reject error // wraps ErrBadCredentials
}

// NewTokenReviewer reviews tokens through client. With audiences set, a
// token is accepted only if the host says it is valid for one of them.
func NewTokenReviewer(client kubernetes.Interface, audiences []string, cfg CacheConfig) (*TokenReviewer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	return &TokenReviewer{client: client, audiences: slices.Clone(audiences), cache: newReviewCache[tokenResult]("token", cfg)}, nil
}

// Authenticate implements Authenticator. Errors wrap ErrBadCredentials when
// the host rejected the token and ErrUnavailable when it could not say.
func (t *TokenReviewer) Authenticate(r *http.Request) (*User, bool, error) {
	tok, ok := Bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, false, nil
	}
	// Only the digest is kept, so a heap dump of the cache holds no tokens.
	d := sha256.Sum256([]byte(tok))
	res, err := t.cache.get(r.Context(), string(d[:]), func(ctx context.Context) (tokenResult, bool, error) {
		return t.review(ctx, tok)
	})
	if err != nil {
		return nil, false, err
	}
	if res.reject != nil {
		return nil, false, res.reject
	}
	return res.user.Copy(), true, nil
}

func (t *TokenReviewer) review(ctx context.Context, tok string) (tokenResult, bool, error) {
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: t.audiences}}
	out, err := t.client.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
	if err != nil {
		return tokenResult{}, false, fmt.Errorf("%w: tokenreview: %w", ErrUnavailable, err)
	}
	st := out.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "token not authenticated by the host cluster"
		}
		return tokenResult{reject: fmt.Errorf("%w: %s", ErrBadCredentials, msg)}, false, nil
	}
	// The TokenReview API asks audience-aware clients to check this: a
	// reviewer that ignores spec.audiences would otherwise accept any token.
	if len(t.audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(t.audiences, a) }) {
		return tokenResult{reject: fmt.Errorf("%w: token is not valid for audiences %v", ErrBadCredentials, t.audiences)}, false, nil
	}
	if st.User.Username == "" {
		return tokenResult{reject: fmt.Errorf("%w: host cluster authenticated the token without a user name", ErrBadCredentials)}, false, nil
	}
	u := &User{Name: st.User.Username, UID: st.User.UID, Groups: slices.Clone(st.User.Groups)}
	if len(st.User.Extra) > 0 {
		u.Extra = make(map[string][]string, len(st.User.Extra))
		for k, v := range st.User.Extra {
			u.Extra[k] = slices.Clone(v)
		}
	}
	return tokenResult{user: u}, true, nil
}

// SubjectAccessReviewer authorizes callers with a SubjectAccessReview on the
// hub's host cluster: a caller reaches cluster NAME if host RBAC grants "get"
// on clusters/proxy NAME in group backhaul.io.
type SubjectAccessReviewer struct {
	client kubernetes.Interface
	cache  *reviewCache[accessResult]
}

type accessResult struct {
	allowed bool
	reason  string
}

// NewSubjectAccessReviewer reviews access through client.
func NewSubjectAccessReviewer(client kubernetes.Interface, cfg CacheConfig) (*SubjectAccessReviewer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("access review: %w", err)
	}
	return &SubjectAccessReviewer{client: client, cache: newReviewCache[accessResult]("access", cfg)}, nil
}

// Authorize implements Authorizer. Errors wrap ErrUnavailable.
func (s *SubjectAccessReviewer) Authorize(ctx context.Context, u *User, cluster string) (bool, string, error) {
	if u == nil {
		return false, "no authenticated user", nil
	}
	key, err := accessKey(u, cluster)
	if err != nil {
		return false, "", err
	}
	res, err := s.cache.get(ctx, key, func(ctx context.Context) (accessResult, bool, error) {
		return s.review(ctx, u, cluster)
	})
	if err != nil {
		return false, "", err
	}
	return res.allowed, res.reason, nil
}

func (s *SubjectAccessReviewer) review(ctx context.Context, u *User, cluster string) (accessResult, bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group:       backhaulv1alpha1.GroupName,
			Resource:    backhaulv1alpha1.ResourceClusters,
			Subresource: backhaulv1alpha1.SubresourceProxy,
			Verb:        "get",
			Name:        cluster,
		},
		User:   u.Name,
		UID:    u.UID,
		Groups: slices.Clone(u.Groups),
	}}
	if len(u.Extra) > 0 {
		sar.Spec.Extra = make(map[string]authorizationv1.ExtraValue, len(u.Extra))
		for k, v := range u.Extra {
			sar.Spec.Extra[k] = slices.Clone(v)
		}
	}
	out, err := s.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return accessResult{}, false, fmt.Errorf("%w: subjectaccessreview: %w", ErrUnavailable, err)
	}
	st := out.Status
	// An authorizer that allowed despite another's evaluation error has
	// still allowed: the error only explains a denial.
	if st.Allowed && !st.Denied {
		return accessResult{allowed: true}, true, nil
	}
	reason := st.Reason
	switch {
	case reason != "" && st.EvaluationError != "":
		reason += "; evaluation error: " + st.EvaluationError
	case st.EvaluationError != "":
		reason = "evaluation error: " + st.EvaluationError
	case reason == "":
		reason = fmt.Sprintf(`no rule on the hub grants "get" on %s/%s %q in group %s`,
			backhaulv1alpha1.ResourceClusters, backhaulv1alpha1.SubresourceProxy, cluster, backhaulv1alpha1.GroupName)
	}
	return accessResult{reason: reason}, false, nil
}

// accessKey names everything the review depends on. Groups are sorted
// because their order does not change a decision; the digest keeps keys of
// users in many groups small.
func accessKey(u *User, cluster string) (string, error) {
	groups := slices.Clone(u.Groups)
	slices.Sort(groups)
	// json.Marshal sorts map keys and quotes strings, so the encoding is
	// unambiguous without a hand-written separator scheme.
	b, err := json.Marshal(struct {
		N, U, C string
		G       []string
		E       map[string][]string
	}{u.Name, u.UID, cluster, groups, u.Extra})
	if err != nil {
		return "", fmt.Errorf("access cache key: %w", err)
	}
	d := sha256.Sum256(b)
	return string(d[:]), nil
}
