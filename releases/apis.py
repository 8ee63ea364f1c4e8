"""REST endpoints of the release workflow: aliases (set, move, list, history, delete) and webhooks
(create, list, delete, deliveries, send a test event)."""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import TRACKED_WORK_FIELDS, paginated_response
from core.events import EVENTS
from core.schema import error_response
from releases.models import Alias, AliasMove, Webhook, WebhookDelivery
from releases.selectors import alias_get, alias_history, alias_list, delivery_list, webhook_get, webhook_list
from releases.services import alias_delete, alias_set, webhook_create, webhook_delete, webhook_test
from teams.selectors import membership_get


class AliasOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="task.team.slug")
    task = serializers.CharField(source="task.slug")
    head = serializers.IntegerField(source="head_id", help_text="The head version the alias points to.")
    version = serializers.IntegerField(source="head.version")
    backbone = serializers.IntegerField(source="head.backbone_id")
    updated_by = serializers.CharField(source="updated_by.username", default=None, allow_null=True)

    class Meta:
        model = Alias
        fields = ["id", "team", "task", "name", "head", "version", "backbone", "updated_by", "updated_at"]


class AliasMoveOutputSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, allow_null=True)
    from_head = serializers.IntegerField(source="from_head_id", allow_null=True)
    from_version = serializers.IntegerField(source="from_head.version", default=None, allow_null=True)
    to_head = serializers.IntegerField(source="to_head_id", allow_null=True)
    to_version = serializers.IntegerField(source="to_head.version", default=None, allow_null=True)

    class Meta:
        model = AliasMove
        fields = [
            "id",
            "action",
            "actor",
            "from_head",
            "from_version",
            "to_head",
            "to_version",
            "comment",
            "created_at",
        ]


class AliasListCreateApi(APIView):
    """GET the team's aliases with their current head; POST sets or moves one (reviewers and admins)."""

    class QuerySerializer(serializers.Serializer):
        team = serializers.CharField(required=False, help_text="A team's slug; left out: all your teams.")
        task = serializers.CharField(required=False, help_text="Only this task's aliases (a slug).")

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        task = serializers.CharField(help_text="The task's slug.")
        name = serializers.CharField(max_length=63, help_text="A slug, e.g. champion, staging or canary.")
        head = serializers.IntegerField(help_text="An approved head version of the task, not authored by you.")
        comment = serializers.CharField(required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "AliasSet"

    @extend_schema(parameters=[QuerySerializer], responses=AliasOutputSerializer(many=True))
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        slug = query.validated_data.get("team")
        team = membership_get(user=request.user, team_slug=slug).team if slug else None
        aliases = alias_list(user=request.user, team=team, task_slug=query.validated_data.get("task"))
        return paginated_response(request, aliases, AliasOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Promote to champion",
                value={"team": "vision", "task": "sentiment", "name": "champion", "head": 12, "comment": "A/B won"},
                request_only=True,
            )
        ],
        responses={
            201: OpenApiResponse(AliasOutputSerializer, description="The alias was created or moved."),
            200: OpenApiResponse(AliasOutputSerializer, description="The alias already pointed to that version."),
            403: error_response(
                "Only reviewers and admins set aliases, and never onto a head version they authored (the message "
                "says which)."
            ),
            409: error_response("The head version is not approved (code not_approved; detail.current_status)."),
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        team = membership_get(user=request.user, team_slug=values["team"]).team
        alias, changed = alias_set(
            user=request.user,
            team=team,
            task_slug=values["task"],
            name=values["name"],
            head_id=values["head"],
            comment=values["comment"],
        )
        body = AliasOutputSerializer(alias_get(user=request.user, pk=alias.pk)).data
        return Response(body, status=status.HTTP_201_CREATED if changed else status.HTTP_200_OK)


class AliasDetailApi(APIView):
    """GET one alias; DELETE it (reviewers and admins; the deletion stays in its history)."""

    class DeleteQuerySerializer(serializers.Serializer):
        comment = serializers.CharField(required=False, allow_blank=True, default="", help_text="Why, for the history.")

    @extend_schema(responses=AliasOutputSerializer)
    def get(self, request, pk: int):
        return Response(AliasOutputSerializer(alias_get(user=request.user, pk=pk)).data)

    @extend_schema(
        parameters=[DeleteQuerySerializer],
        responses={204: None, 403: error_response("Only reviewers and admins delete aliases.")},
    )
    def delete(self, request, pk: int):
        query = self.DeleteQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        alias = alias_get(user=request.user, pk=pk)
        alias_delete(user=request.user, alias=alias, comment=query.validated_data["comment"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class AliasHistoryApi(APIView):
    """Every set, move and deletion of an alias (also of a deleted one): who, when, from, to, comment."""

    @extend_schema(responses=AliasMoveOutputSerializer(many=True))
    def get(self, request, pk: int):
        alias = alias_get(user=request.user, pk=pk, include_deleted=True)
        return paginated_response(request, alias_history(alias=alias), AliasMoveOutputSerializer, view=self)


# --- Webhooks -------------------------------------------------------------------------------


class WebhookOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENTS))
    secret_hint = serializers.CharField(help_text="The secret's last characters; the secret itself is shown once.")

    class Meta:
        model = Webhook
        fields = ["id", "team", "url", "events", "active", "secret_hint", "created_at"]


class WebhookCreatedOutputSerializer(WebhookOutputSerializer):
    secret = serializers.CharField(help_text="Shown this once: keep it to verify X-ModelHub-Signature.")

    class Meta(WebhookOutputSerializer.Meta):
        fields = [*WebhookOutputSerializer.Meta.fields, "secret"]


class WebhookDeliveryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "delivery_id",
            "event",
            "attempt",
            "status",
            "response_status",
            "duration_ms",
            "error",
            "next_try_at",
            "created_at",
            *TRACKED_WORK_FIELDS,
        ]


class WebhookListCreateApi(APIView):
    """GET the team's webhooks; POST registers one (reviewers and admins)."""

    class QuerySerializer(serializers.Serializer):
        team = serializers.CharField()

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        url = serializers.URLField(max_length=2000, help_text="http(s); it must reach a public address.")
        events = serializers.ListField(child=serializers.ChoiceField(choices=EVENTS), allow_empty=False)
        secret = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=200,
            help_text="Signs every delivery (HMAC-SHA256); at least 16 characters. Left out: one is generated.",
        )

        class Meta:
            ref_name = "WebhookCreate"

    @extend_schema(
        parameters=[QuerySerializer],
        responses={200: WebhookOutputSerializer(many=True), 403: error_response("Only reviewers and admins.")},
    )
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        team = membership_get(user=request.user, team_slug=query.validated_data["team"]).team
        webhooks = webhook_list(user=request.user, team=team)
        return paginated_response(request, webhooks, WebhookOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Releases to a chat bot",
                value={
                    "team": "vision",
                    "url": "https://hooks.example.com/modelhub",
                    "events": ["alias.moved", "assembly.ready"],
                    "secret": "a-long-random-shared-secret",
                },
                request_only=True,
            )
        ],
        responses={
            201: WebhookCreatedOutputSerializer,
            400: error_response(
                "Invalid input, or a destination that is not allowed: the URL resolves to a loopback, private, "
                "link-local or other non-public address (code destination_not_allowed) or does not resolve."
            ),
            403: error_response("Only reviewers and admins manage webhooks."),
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        team = membership_get(user=request.user, team_slug=values["team"]).team
        webhook, secret = webhook_create(
            user=request.user, team=team, url=values["url"], events=values["events"], secret=values["secret"]
        )
        body = dict(WebhookOutputSerializer(webhook).data, secret=secret)
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    @extend_schema(responses={200: WebhookOutputSerializer, 403: error_response("Only reviewers and admins.")})
    def get(self, request, pk: int):
        return Response(WebhookOutputSerializer(webhook_get(user=request.user, pk=pk)).data)

    @extend_schema(responses={204: None, 403: error_response("Only reviewers and admins.")})
    def delete(self, request, pk: int):
        webhook_delete(user=request.user, webhook=webhook_get(user=request.user, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesApi(APIView):
    """The delivery log: one row per try (status code, duration, error), newest first."""

    @extend_schema(
        responses={200: WebhookDeliveryOutputSerializer(many=True), 403: error_response("Only reviewers and admins.")}
    )
    def get(self, request, pk: int):
        webhook = webhook_get(user=request.user, pk=pk)
        return paginated_response(request, delivery_list(webhook=webhook), WebhookDeliveryOutputSerializer, view=self)


class WebhookTestApi(APIView):
    """Send a 'webhook.test' event to the webhook now (a worker delivers it; see its deliveries)."""

    throttle_scope = "webhook_test"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES

    @extend_schema(
        request=None,
        responses={202: WebhookDeliveryOutputSerializer, 403: error_response("Only reviewers and admins.")},
    )
    def post(self, request, pk: int):
        delivery = webhook_test(user=request.user, webhook=webhook_get(user=request.user, pk=pk))
        return Response(WebhookDeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
